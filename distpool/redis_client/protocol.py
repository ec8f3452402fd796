"""RESP2, the Redis protocol: commands packed into bytes, and replies read off a socket.

Replies are parsed by ``hiredis.Reader``, the Redis project's own C parser, in a fraction of
the time a parser in Python takes (a collector reads hundreds of records at a time). They
come back raw, as
Redis sends them: a bulk string as ``bytes``, a simple string as ``bytes`` too, an integer
as ``int``, an array as a ``list``, nil as ``None``, and an error as a :class:`ReplyError`
*returned* in its place (a transaction's or a pipeline's other replies still follow it on
the wire; the caller decides what to raise). No connection asks for RESP3 (``HELLO 3``), so
a reply of another type (a map, a double, a boolean) means a broken stream.

One thing hiredis cannot do: receive a large value straight into memory of the caller's
(a blob's part into the buffer it is assembled in); it keeps every byte it is fed.
:meth:`ReplyReader.read_bulk_into` reads those replies itself.
"""

from __future__ import annotations

import socket
from typing import Any, Union

import hiredis

Buffer = Union[bytes, bytearray, memoryview]

#: What one read asks the socket for.
READ_SIZE = 64 * 1024
#: Longest reply header read by :meth:`ReplyReader.read_bulk_into`: anything longer is not
#: Redis speaking.
MAX_LINE = 64 * 1024


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
    arguments that the caller sends after it (hiredis packs the others, in C)."""
    if not more:
        try:
            return hiredis.pack_command(command)  # type: ignore[no-any-return]
        except TypeError:  # an argument it does not take (a bytearray, say): packed below
            pass
    args = [arg if isinstance(arg, (bytes, bytearray, memoryview)) else str(arg).encode()
            for arg in command]
    return b"*%d\r\n" % (len(args) + more) + b"".join(
        b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


#: What hiredis gives for a reply not yet whole.
_INCOMPLETE = object()
_RESP2 = (bytes, int, list, ReplyError, type(None))


class ReplyReader:
    """Replies read from ``sock``: whole ones (hiredis), or a bulk string straight into
    memory of the caller's. What the socket gave beyond a reply waits for the next."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._parser = hiredis.Reader(protocolError=RedisConnectionError,
                                      replyError=ReplyError, notEnoughData=_INCOMPLETE)
        # Received by read_bulk_into beyond the values it read: the parser's, next.
        self._unparsed = bytearray()

    def read(self) -> Any:
        """The next reply (a :class:`ReplyError` for an error reply)."""
        if self._unparsed:
            self._parser.feed(bytes(self._unparsed))
            self._unparsed.clear()
        while True:
            reply = self._parser.gets()
            if reply is not _INCOMPLETE:
                return _checked(reply)
            chunk = self._sock.recv(READ_SIZE)
            if not chunk:
                raise RedisConnectionError("connection closed by Redis")
            self._parser.feed(chunk)

    def read_bulk_into(self, buffer: memoryview) -> int | None:
        """Receive one bulk-string reply into ``buffer``; its length, or None if nil. Raises
        the reply's :class:`ReplyError`, or ``ValueError`` if the value does not fit (the
        stream is then mid-reply: the connection must be dropped). Called where every
        earlier reply has been read."""
        if self._parser.has_data():
            raise RedisConnectionError("a value read past a reply not read yet")
        line = self._line()
        if line[:1] == b"-":
            raise ReplyError(line[1:].decode("utf-8", "replace"))
        if line[:1] != b"$" or not (line[1:].isdigit() or line == b"$-1"):
            raise RedisConnectionError(f"not a Redis reply: {line[:40]!r}")
        size = int(line[1:])
        if size < 0:
            return None
        if size > buffer.nbytes:
            raise ValueError(f"a value of {size} bytes, where at most {buffer.nbytes} fit")
        taken = min(len(self._unparsed), size)
        buffer[:taken] = self._unparsed[:taken]
        del self._unparsed[:taken]
        while taken < size:
            count = self._sock.recv_into(buffer[taken:size])
            if not count:
                raise RedisConnectionError("connection closed by Redis")
            taken += count
        if self._line() != b"":
            raise RedisConnectionError("a bulk reply without its end")
        return size

    def _line(self) -> bytes:
        """The next line of :meth:`read_bulk_into`'s, without its CRLF."""
        while True:
            end = self._unparsed.find(b"\r\n")
            if end >= 0:
                line = bytes(self._unparsed[:end])
                del self._unparsed[:end + 2]
                return line
            if len(self._unparsed) > MAX_LINE:
                raise RedisConnectionError(f"a reply line longer than {MAX_LINE} bytes")
            chunk = self._sock.recv(READ_SIZE)
            if not chunk:
                raise RedisConnectionError("connection closed by Redis")
            self._unparsed += chunk


def _checked(reply: Any) -> Any:
    """``reply``, if RESP2 has its type (arrays of such, to any depth)."""
    if type(reply) not in _RESP2 or (type(reply) is list and not all(
            type(item) in _RESP2 and (type(item) is not list or _checked(item) is item)
            for item in reply)):
        raise RedisConnectionError(f"not a RESP2 reply: {type(reply).__name__}")
    return reply
