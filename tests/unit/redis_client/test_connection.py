"""distpool's own Redis connection against a scripted server: what it says on connecting,
and what it does with the replies it gets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import distpool
from distpool.redis_client.connection import Connection
from distpool.redis_client.protocol import RedisConnectionError, ReplyError, ReplyReader
from distpool.retry import RetryPolicy

Answer = Callable[[list[bytes]], bytes]


class ScriptedRedis:
    """A server on a loopback port that records each command it receives and answers it
    with ``answer(command)``, on any number of connections."""

    def __init__(self, answer: Answer) -> None:
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(sock,), daemon=True).start()

    def _talk(self, sock: socket.socket) -> None:
        reader = ReplyReader(sock)
        with sock:
            while True:
                try:
                    command = reader.read()
                except OSError:
                    return
                self.commands.append(command)
                sock.sendall(self._answer(command))

    def close(self) -> None:
        self._listener.close()


def answer_ok(command: list[bytes]) -> bytes:
    if command[:2] == [b"CLIENT", b"SETINFO"]:
        return b"-ERR unknown subcommand 'SETINFO'\r\n"  # as Redis before 7.2 says
    return b"+OK\r\n"


@pytest.fixture
def scripted() -> Iterator[Callable[[Answer], ScriptedRedis]]:
    servers: list[ScriptedRedis] = []

    def start(answer: Answer) -> ScriptedRedis:
        servers.append(ScriptedRedis(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_a_connection_logs_in_names_itself_and_selects_its_database_first(scripted):
    server = scripted(answer_ok)
    host = server.url.split("//")[1]
    connection = Connection(f"redis://ops:s%40cret@{host}/3")
    assert connection.run([("PING",)]) == [b"OK"]
    assert server.commands == [
        [b"AUTH", b"ops", b"s@cret"],
        [b"CLIENT", b"SETINFO", b"LIB-NAME", b"distpool"],
        [b"CLIENT", b"SETINFO", b"LIB-VER", distpool.__version__.encode()],
        [b"SELECT", b"3"],
        [b"PING"]]
    connection.close()


def test_a_refused_login_is_raised_not_retried(scripted):
    server = scripted(lambda command: b"-WRONGPASS invalid username-password pair\r\n"
                      if command[0] == b"AUTH" else answer_ok(command))
    connection = Connection(server.url.replace("//", "//:bad@"))
    with pytest.raises(ReplyError, match="refused the connection: WRONGPASS"):
        connection.run([("PING",)])
    assert server.connections == 1


def test_a_server_that_answers_garbage_is_dropped_and_the_call_retried_then_failed(scripted):
    server = scripted(lambda command: b"?garbage\r\n" if command == [b"PING"]
                      else answer_ok(command))
    connection = Connection(server.url, retry=RetryPolicy(retries=2, base=0.01))
    with pytest.raises(RedisConnectionError, match=r'Protocol error, got "\?" as reply type'):
        connection.run([("PING",)])
    assert server.connections == 3  # a new connection for each try


def test_replies_of_commands_sent_without_waiting_are_read_in_order(scripted):
    counter = iter(range(1, 100))
    server = scripted(lambda command: b":%d\r\n" % next(counter) if command[0] == b"INCR"
                      else answer_ok(command))
    connection = Connection(server.url)
    first = connection.send([("INCR", "n"), ("INCR", "n")])
    second = connection.send([("INCR", "n")])
    assert connection.run([("INCR", "n")]) == [4]
    assert first.get() == [1, 2] and second.get() == [3]
    connection.close()


def test_a_late_reply_fails_the_call_at_its_timeout_and_is_not_tried_again(scripted):
    server = scripted(lambda command: (time.sleep(3), b"+PONG\r\n")[1]
                      if command[0] in (b"PING", b"ECHO") else answer_ok(command))
    started = time.monotonic()
    with pytest.raises(RedisConnectionError, match="timed out"):
        Connection(server.url, timeout=0.2).run([("PING",)])
    with pytest.raises(RedisConnectionError, match="timed out"):  # this call's own limit
        Connection(server.url).run([("ECHO", "x")], reply_timeout=0.2)
    assert time.monotonic() - started < 2
    assert server.connections == 2  # one each: a frozen server is not asked again
