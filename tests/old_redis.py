"""A stand-in for an old Redis (5.0.14 unless told): it speaks enough RESP for a client to
connect and ask what it is, and answers everything else as Redis 5 answers a command it does
not have.

What a connection's setup sends (``distpool.redis_client.connection``, redis-py) is answered
as Redis 5 does: ``AUTH`` and ``SELECT`` OK, ``CLIENT SETINFO`` and ``HELLO`` an error,
``CLIENT SETNAME`` OK; then ``PING`` (also inline, as the local cluster's supervisor sends
it) and ``INFO [server]``, which reports ``redis_version``. Every command received is kept in
:attr:`OldRedis.commands`.

In a test: ``with OldRedis() as old: ... old.url() ...``. As a program it stands in for a
``redis-server`` executable, taking its options (``--port N``, the others ignored):
``python tests/old_redis.py --port 6390 [--version-reported 3.0.504]``.
"""

from __future__ import annotations

import socketserver
import sys
import threading
from typing import Any

DEFAULT_VERSION = "5.0.14"


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        while True:
            command = self._read_command()
            if command is None:
                return
            if not command:
                continue
            self.server.commands.append(command)
            self.wfile.write(self.server.answer(command))
            self.wfile.flush()

    def _read_command(self) -> list[bytes] | None:
        """The next command, multi-bulk or inline; None at end of stream."""
        line = self.rfile.readline()
        if not line:
            return None
        if not line.startswith(b"*"):
            return line.split()  # an inline command: PING\r\n
        arguments = []
        for _ in range(int(line[1:])):
            header = self.rfile.readline()
            if not header.startswith(b"$"):
                return None
            data = self.rfile.read(int(header[1:]) + 2)
            arguments.append(data[:-2])
        return arguments


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, version: str) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.version = version
        self.commands: list[list[bytes]] = []

    def answer(self, command: list[bytes]) -> bytes:
        name = command[0].upper()
        subcommand = command[1].upper() if len(command) > 1 else b""
        if name == b"PING":
            return b"+PONG\r\n"
        if name in (b"AUTH", b"SELECT", b"QUIT") or (name, subcommand) == (b"CLIENT",
                                                                           b"SETNAME"):
            return b"+OK\r\n"
        if name == b"INFO":
            return _bulk(b"# Server\r\nredis_version:%s\r\nredis_git_sha1:00000000\r\n"
                         b"redis_mode:standalone\r\nos:Stand-in\r\ntcp_port:%d\r\n"
                         % (self.version.encode(), self.server_address[1]))
        if name == b"CLIENT":
            return (b"-ERR Unknown subcommand or wrong number of arguments for '%s'. Try "
                    b"CLIENT HELP\r\n" % command[1] if len(command) > 1 else
                    b"-ERR wrong number of arguments for 'client' command\r\n")
        return b"-ERR unknown command `%s`, with args beginning with: \r\n" % command[0]


class OldRedis:
    """The stand-in, serving on a free loopback port (or ``port``) from threads of this
    process until :meth:`stop`."""

    def __init__(self, version: str = DEFAULT_VERSION, port: int = 0) -> None:
        self._server = _Server(port, version)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    @property
    def commands(self) -> list[list[bytes]]:
        """Every command received, in order (across connections)."""
        return self._server.commands

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> OldRedis:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    """Serve as ``redis-server`` would be asked to: ``--port N``; the rest is ignored."""
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 6379
    version = (argv[argv.index("--version-reported") + 1] if "--version-reported" in argv
               else DEFAULT_VERSION)
    server = _Server(port, version)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
