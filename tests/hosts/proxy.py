"""A TCP proxy that delays every byte by a fixed time each way: a slow link, where the
kernel's own (``tc netem``) is not available.

    python -m tests.hosts.proxy LISTEN_HOST:PORT TARGET_HOST:PORT DELAY_SECONDS

Bytes are delayed, not throttled: each chunk read is sent on ``DELAY_SECONDS`` after it
arrived, in order, so a round trip through the proxy takes twice the delay longer.
"""

from __future__ import annotations

import queue
import socket
import sys
import threading
import time

CHUNK = 65536


def pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
    """Copy ``source`` to ``sink``, each chunk ``delay`` seconds after it arrived."""
    pending: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def send() -> None:
        while True:
            due, data = pending.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return

    threading.Thread(target=send, daemon=True).start()
    while True:
        try:
            data = source.recv(CHUNK)
        except OSError:
            data = b""
        pending.put((time.monotonic() + delay, data))
        if not data:
            return


def serve(listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
    server = socket.create_server(listen, reuse_port=False)
    print("listening", flush=True)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(target)
        except OSError:
            client.close()
            continue
        for source, sink in ((client, upstream), (upstream, client)):
            source.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=pump, args=(source, sink, delay), daemon=True).start()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    serve(_address(sys.argv[1]), _address(sys.argv[2]), float(sys.argv[3]))
