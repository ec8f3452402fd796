"""RESP2, the Redis protocol, as distpool's own connections speak it: commands packed into
bytes, and replies read off a socket through a buffer of its own.

Replies come back raw, as Redis sends them: a bulk string as ``bytes``, a simple string as
``bytes`` too, an integer as ``int``, an array as a ``list``, nil as ``None``, and an error
as a :class:`ReplyError` *returned* in its place (a transaction's or a pipeline's other
replies still follow it on the wire; the caller decides what to raise). No connection asks
for RESP3 (``HELLO 3``), so no other type is valid: one is a broken stream.
"""

from __future__ import annotations

import socket
from typing import Any, Union

Buffer = Union[bytes, bytearray, memoryview]

#: Longest reply line taken (a header, a simple string or an error message): anything longer
#: is not Redis speaking.
MAX_LINE = 64 * 1024
#: What one read asks the socket for.
READ_SIZE = 64 * 1024


class RedisError(Exception):
    """Redis could not be reached, or refused a command."""


class ReplyError(RedisError):
    """An error reply to one command, such as ``OOM command not allowed ...``."""

    @property
    def code(self) -> str:
        """The error's first word (``OOM``, ``NOSCRIPT``, ``WRONGTYPE``, ``ERR``, ...)."""
        return str(self).split(" ", 1)[0]


class RedisConnectionError(RedisError, ConnectionError):
    """The connection failed or broke: whether Redis ran what was sent is unknown."""


def pack(command: tuple[Any, ...], more: int = 0) -> bytes:
    """``command`` in RESP, its arguments text, numbers or bytes, announcing ``more``
    arguments that the caller sends after it."""
    args = [arg if isinstance(arg, (bytes, bytearray, memoryview)) else str(arg).encode()
            for arg in command]
    return b"*%d\r\n" % (len(args) + more) + b"".join(
        b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


class ReplyReader:
    """Replies read from ``sock``: whole ones, or a bulk string straight into memory of the
    caller's. What the socket gave beyond a reply waits in the buffer for the next."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._start = 0  # where the unread part of the buffer begins

    def read(self) -> Any:
        """The next reply (a :class:`ReplyError` for an error reply)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            size = _length(rest, line)
            return None if size < 0 else self._bulk(size)
        if kind == b"*":
            count = _length(rest, line)
            return None if count < 0 else [self.read() for _ in range(count)]
        if kind == b":":
            try:
                return int(rest)
            except ValueError:
                raise _broken(line) from None
        if kind == b"+":
            return rest
        if kind == b"-":
            return ReplyError(rest.decode("utf-8", "replace"))
        raise _broken(line)

    def read_bulk_into(self, buffer: memoryview) -> int | None:
        """Receive one bulk-string reply into ``buffer``; its length, or None if nil. Raises
        the reply's :class:`ReplyError`, or ``ValueError`` if the value does not fit (the
        stream is then mid-reply: the connection must be dropped)."""
        line = self._line()
        if line[:1] == b"-":
            raise ReplyError(line[1:].decode("utf-8", "replace"))
        if line[:1] != b"$":
            raise _broken(line)
        size = _length(line[1:], line)
        if size < 0:
            return None
        if size > buffer.nbytes:
            raise ValueError(f"a value of {size} bytes, where at most {buffer.nbytes} fit")
        self._receive_into(buffer[:size])
        self._expect_end()
        return size

    def _bulk(self, size: int) -> bytes:
        if len(self._buffer) - self._start >= size + 2:
            end = self._start + size
            value = bytes(self._buffer[self._start:end])
            self._start = end
        else:  # a large value: straight from the socket into its own memory
            value_memory = bytearray(size)
            self._receive_into(memoryview(value_memory))
            value = bytes(value_memory)
        self._expect_end()
        return value

    def _receive_into(self, target: memoryview) -> None:
        """Fill ``target`` from the buffer first, then from the socket."""
        buffered = min(len(self._buffer) - self._start, target.nbytes)
        target[:buffered] = self._buffer[self._start:self._start + buffered]
        self._start += buffered
        received = buffered
        while received < target.nbytes:
            count = self._sock.recv_into(target[received:])
            if not count:
                raise RedisConnectionError("connection closed by Redis")
            received += count

    def _expect_end(self) -> None:
        if self._line() != b"":
            raise RedisConnectionError("a bulk reply without its end")

    def _line(self) -> bytes:
        """The next line, without its CRLF."""
        while True:
            end = self._buffer.find(b"\r\n", self._start)
            if end >= 0:
                line = bytes(self._buffer[self._start:end])
                self._start = end + 2
                return line
            if len(self._buffer) - self._start > MAX_LINE:
                raise RedisConnectionError(f"a reply line longer than {MAX_LINE} bytes")
            self._fill()

    def _fill(self) -> None:
        if self._start:  # drop what was read before taking more
            del self._buffer[:self._start]
            self._start = 0
        chunk = self._sock.recv(READ_SIZE)
        if not chunk:
            raise RedisConnectionError("connection closed by Redis")
        self._buffer += chunk


def _length(text: bytes, line: bytes) -> int:
    """A bulk string's or an array's announced length (-1: nil)."""
    if text == b"-1":
        return -1
    if not text.isdigit():
        raise _broken(line)
    return int(text)


def _broken(line: bytes) -> RedisConnectionError:
    return RedisConnectionError(f"not a Redis reply: {line[:40]!r}")
