"""A connection to Redis, shared by a process's threads.

distpool's clients, and the store's side of its workers, speak to Redis through this module
and :mod:`.protocol` alone: a handful of commands, sent packed, their raw replies read back.
redis-py (imported with its asyncio client, whatever is used) cost a fresh client process
more time than everything else before its first result; the workers' kombu transport still
uses it. What redis-py's connections did for distpool, this one does too: it connects on
first use (TLS, ``AUTH``, ``SELECT``, and names itself to ``CLIENT LIST``), pings a
connection idle for ``health_check_interval`` before using it, reconnects in a forked child
instead of sharing its parent's socket, and retries a call whose connection failed, on a new
connection, after a backoff (a :class:`~distpool.retry.RetryPolicy`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._version import __version__
from ..retry import RetryPolicy
from .endpoint import Endpoint
from .protocol import Buffer, RedisConnectionError, ReplyError, ReplyReader, pack

T = TypeVar("T")

#: How distpool's own connections name their library to ``CLIENT LIST`` (Redis 7.2 and later;
#: older servers refuse ``CLIENT SETINFO``, which is then left unsaid).
LIBRARY_NAME = "distpool"


#: redis-py's own default, which the store had before: about 3 s of tries in all.
DEFAULT_RETRY = RetryPolicy(retries=10)


class PendingReplies:
    """The replies of commands sent without waiting (:meth:`Connection.send`), read with the
    connection's next call, or by :meth:`get`."""

    def __init__(self, connection: Connection, count: int) -> None:
        self._connection = connection
        self._count = count
        self._values: list[Any] | None = None
        self._error: BaseException | None = None

    def get(self) -> list[Any]:
        """The replies (a failed command's as its :class:`ReplyError`); raises what reading
        them raised (the connection failed: whether Redis ran the commands is then unknown)."""
        if self._values is None and self._error is None:
            self._connection.run([])  # reads every outstanding reply
        if self._error is not None:
            raise self._error
        assert self._values is not None
        return self._values


class Connection:
    """A connection to the Redis at ``url``, shared by threads, that sends each call's
    commands as one packed write and reads their raw replies (see :mod:`.resp`). Commands
    can also be sent without waiting (:meth:`send`): Redis runs one connection's commands in
    order, and their replies are read before those of the next call.

    ``timeout`` bounds each wait for a reply (None: a reply may take for ever), and
    ``connect_timeout`` each connect; the URL's ``socket_timeout`` and
    ``socket_connect_timeout`` override them. A call whose reply is late fails at once, not
    retried: a server that does not answer (stopped, paused, cut off by a partition that
    drops packets) would not answer a new connection either."""

    def __init__(self, url: str, *, timeout: float | None = None,
                 connect_timeout: float | None = 5.0, retry: RetryPolicy = DEFAULT_RETRY,
                 health_check_interval: float = 30.0) -> None:
        endpoint = Endpoint.from_url(url)
        self.endpoint = endpoint
        self._timeout = endpoint.options.get("socket_timeout", timeout)
        self._connect_timeout = endpoint.options.get("socket_connect_timeout", connect_timeout)
        self._retry = retry
        self._health_check_interval = endpoint.options.get("health_check_interval",
                                                          health_check_interval)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reader: ReplyReader | None = None
        self._pid = 0  # of the process that opened the socket
        self._wait: float | None = None  # the socket's timeout
        self._used = 0.0  # monotonic time of the last reply
        self._unread: list[PendingReplies] = []
        self._closed = False

    def send(self, commands: list[tuple[Any, ...]]) -> PendingReplies:
        """Send ``commands`` now; their replies are read later (see :class:`PendingReplies`).
        Redis runs one connection's commands in order."""
        reply = PendingReplies(self, len(commands))
        with self._lock:
            try:
                self._open(self._timeout).sendall(
                    b"".join(pack(command) for command in commands))
            except BaseException as exc:
                self._lose_unread(exc)
                reply._error = exc
                return reply
            self._unread.append(reply)
        return reply

    def run(self, commands: Sequence[tuple[Any, ...]],
            reply_timeout: float | None = None) -> list[Any]:
        """Each command's reply, in order, as Redis sends it (bytes, ints, lists; a
        transaction's in EXEC's list); a failed command raises its :class:`ReplyError`
        once every reply is read. ``reply_timeout``: how long the replies may take, for
        this call (a blocking command's), instead of the connection's ``timeout``."""
        packed = b"".join(pack(command) for command in commands)

        def call(sock: socket.socket, reader: ReplyReader) -> list[Any]:
            if packed:
                sock.sendall(packed)
            return _replies(reader, len(commands))

        return self._call(call, reply_timeout)

    # Bulk values go straight between their own memory and the socket: packing a value into
    # one command buffer to send it, or a reply into a bytes object to read it, would each
    # cost as much as the transfer (fresh pages fault in one by one).

    def write_values(self, commands: list[tuple[tuple[str, ...], Buffer]],
                     then: Sequence[tuple[Any, ...]] = ()) -> list[Any]:
        """The replies to ``commands``, each a command and a value to send as its last
        argument, from the value's own memory, and to the plain commands ``then``; all sent
        before any reply is read."""
        heads = [pack(command, more=1) + b"$%d\r\n" % memoryview(value).nbytes
                 for command, value in commands]
        tail = b"".join(pack(command) for command in then)

        def call(sock: socket.socket, reader: ReplyReader) -> list[Any]:
            for head, (_, value) in zip(heads, commands):
                sock.sendall(head)
                sock.sendall(value)
                sock.sendall(b"\r\n")
            sock.sendall(tail)
            return _replies(reader, len(commands) + len(then))

        return self._call(call)

    def read_values_into(self, commands: list[tuple[str, ...]],
                         buffer: memoryview) -> list[int | None]:
        """Run ``commands``, whose replies are bulk strings, receiving them one after another
        straight into ``buffer``; return their lengths (None for a nil reply). Raises
        ``ValueError`` (dropping the connection, mid-reply) if they do not fit in it."""
        packed = b"".join(pack(command) for command in commands)

        def call(sock: socket.socket, reader: ReplyReader) -> list[int | None]:
            sock.sendall(packed)
            sizes: list[int | None] = []
            offset = 0
            for index in range(len(commands)):
                try:
                    size = reader.read_bulk_into(buffer[offset:])
                except ReplyError:
                    _replies(reader, len(commands) - index - 1)  # the stream stays in step
                    raise
                sizes.append(size)
                offset += size or 0
            return sizes

        return self._call(call)

    def close(self) -> None:
        """Close the connection for good: what uses it next raises."""
        # Without the lock: a pop may hold it, blocked, until its timeout; shutting the
        # socket down wakes it (but not a parent's socket, which a forked child shares).
        self._closed = True
        sock = self._sock
        if sock is not None:
            if self._pid == os.getpid():
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            sock.close()

    def _call(self, call: Callable[[socket.socket, ReplyReader], T],
              reply_timeout: float | None = None) -> T:
        """``call`` on the open connection, with its unread replies read first; again on a
        new connection, after a backoff, while the connection fails (but for a late reply)
        and tries are left."""
        wait = self._timeout if reply_timeout is None else reply_timeout
        with self._lock:
            failures = 0
            while True:
                try:
                    sock = self._open(wait)
                    self._read_unread()
                    assert self._reader is not None
                    result = call(sock, self._reader)
                    self._used = time.monotonic()
                    return result
                except ReplyError:  # a command's own error: every reply was read
                    raise
                except OSError as exc:  # socket errors and timeouts, RedisConnectionError
                    self._drop()
                    failures += 1
                    if (self._closed or failures > self._retry.retries
                            or isinstance(exc, (socket.timeout, TimeoutError))):
                        raise _named(exc, self.endpoint) from exc
                    time.sleep(self._retry.delay(failures))
                except BaseException:
                    self._drop()  # a reply may be left unread; reconnects on next use
                    raise

    def _open(self, wait: float | None) -> socket.socket:
        """The connected socket, whose replies may take ``wait`` seconds (None: for ever)."""
        if self._closed:
            raise RedisConnectionError(f"{self.endpoint}: the connection was closed")
        if self._sock is not None and self._pid != os.getpid():
            self._forget()  # a forked child's copy: its parent's to use and close
        if self._sock is not None:
            if wait != self._wait:  # (a system call or two, every time it is set)
                self._sock.settimeout(wait)
                self._wait = wait
            if time.monotonic() - self._used > self._health_check_interval:
                self._check_health()
        if self._sock is None:
            self._connect(wait)
        assert self._sock is not None
        return self._sock

    def _connect(self, wait: float | None) -> None:
        endpoint = self.endpoint
        try:
            sock = endpoint.open_socket(self._connect_timeout)
            sock.settimeout(wait)
            self._wait = wait
        except OSError as exc:
            raise _named(exc, endpoint) from exc
        self._sock, self._reader, self._pid = sock, ReplyReader(sock), os.getpid()
        hello: list[tuple[Any, ...]] = []
        if endpoint.password is not None:
            hello.append(("AUTH", *filter(None, (endpoint.username, endpoint.password))))
        hello.append(("CLIENT", "SETINFO", "LIB-NAME", LIBRARY_NAME))
        hello.append(("CLIENT", "SETINFO", "LIB-VER", __version__))
        if endpoint.db:
            hello.append(("SELECT", endpoint.db))
        replies: list[Any] = []
        try:
            sock.sendall(b"".join(pack(command) for command in hello))
            for _ in hello:
                replies.append(self._reader.read())
        except OSError as exc:
            self._drop()
            said = [reply for reply in replies if isinstance(reply, ReplyError)]
            if said:  # Redis said why before it closed (its maxclients, say): retried
                raise RedisConnectionError(f"{endpoint} refused the connection: "
                                           f"{said[0]}") from exc
            raise
        except BaseException:
            self._drop()
            raise
        refused = [reply for command, reply in zip(hello, replies)
                   if isinstance(reply, ReplyError) and command[0] != "CLIENT"]
        if refused:
            self._drop()
            raise ReplyError(f"{endpoint} refused the connection: {refused[0]}")
        self._used = time.monotonic()

    def _check_health(self) -> None:
        """PING a connection that was idle long: Redis may have closed it meanwhile (a
        restart, its idle timeout), and a command had better not go down a dead socket."""
        assert self._sock is not None and self._reader is not None
        try:
            self._read_unread()
            self._sock.sendall(pack(("PING",)))
            self._reader.read()
        except OSError:
            self._drop()

    def _read_unread(self) -> None:
        reader = self._reader
        assert reader is not None
        for reply in self._unread:
            try:
                reply._values = [reader.read() for _ in range(reply._count)]
            except BaseException as exc:
                self._lose_unread(exc)
                raise
        self._unread.clear()

    def _lose_unread(self, exc: BaseException) -> None:
        """The connection failed with replies unread: they are lost, and it is dropped."""
        for reply in self._unread:
            if reply._values is None:
                reply._error = exc
        self._unread.clear()
        self._drop()

    def _drop(self) -> None:
        sock = self._sock
        self._forget()
        if sock is not None:
            sock.close()

    def _forget(self) -> None:
        """Let go of the socket: replies still unread on it will never be read (a forked
        child's copy of its parent's, say, which would wait on a new socket for them)."""
        lost = RedisConnectionError(f"{self.endpoint}: the connection was let go of before "
                                    "these replies were read")
        for reply in self._unread:
            if reply._values is None:
                reply._error = lost
        self._unread.clear()
        self._sock = self._reader = None


def _replies(reader: ReplyReader, count: int) -> list[Any]:
    """``count`` replies; the first error among them is raised once all are read."""
    replies = [reader.read() for _ in range(count)]
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise reply
    return replies


def _named(exc: OSError, endpoint: Endpoint) -> RedisConnectionError:
    """``exc`` as the connection error it is, saying which server."""
    if isinstance(exc, RedisConnectionError) and str(endpoint) in str(exc):
        return exc
    return RedisConnectionError(f"{endpoint}: {exc}")
