"""A TCP proxy in front of a Redis that can lose one reply after Redis has acted on it: the
window in which a popped record exists nowhere but on the wire.

    with ReplyDroppingProxy(redis_port) as proxy:
        ... connect to proxy.url() ...
        proxy.drop_next_reply_to(b"BLMOVE", b"BLPOP")

Once armed, the connection that next sends a command containing one of the markers has the
first reply that carries data (a chunk of at least :data:`CARRIES_DATA` bytes: not a count,
not a blocking command's timeout) swallowed, and is then cut both ways, as a network fault
would cut it.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

CHUNK = 65536
#: The smallest chunk of replies taken to carry data (a signed result record is larger).
CARRIES_DATA = 64


class ReplyDroppingProxy:
    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._markers: tuple[bytes, ...] = ()
        #: Set once a reply has been lost, with what it carried.
        self.dropped = threading.Event()
        self.dropped_reply = b""
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def drop_next_reply_to(self, *markers: bytes) -> None:
        with self._lock:
            self._markers = markers
            self.dropped.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            victim = threading.Event()  # this connection sent the marked command
            threading.Thread(target=self._requests, args=(client, upstream, victim),
                             daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client, victim),
                             daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket,
                  victim: threading.Event) -> None:
        while data := _read(client):
            with self._lock:
                if any(marker in data for marker in self._markers):
                    self._markers = ()
                    victim.set()
            try:
                upstream.sendall(data)
            except OSError:
                break
        _close(client, upstream)

    def _replies(self, upstream: socket.socket, client: socket.socket,
                 victim: threading.Event) -> None:
        while data := _read(upstream):
            if victim.is_set() and len(data) >= CARRIES_DATA:
                self.dropped_reply = data
                self.dropped.set()
                break  # lost: Redis has acted, the client never hears of it
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client, upstream)

    def close(self) -> None:
        self._server.close()
        _close(*self._sockets)

    def __enter__(self) -> ReplyDroppingProxy:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()


def _read(sock: socket.socket) -> bytes:
    try:
        return sock.recv(CHUNK)
    except OSError:
        return b""


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
