"""The Redis version check: what a server reports, and the refusal of one older than 6.2,
against the stand-in old Redis (``tests/old_redis.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import distpool
from distpool.redis_client import version
from distpool.redis_client.connection import Connection
from distpool.store.redis_store import RedisStore
from tests.old_redis import OldRedis


@pytest.fixture(autouse=True)
def nothing_checked_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(version, "_recent_enough", set())


@pytest.fixture
def old() -> Iterator[OldRedis]:
    with OldRedis("5.0.14") as server:
        yield server


@pytest.mark.parametrize(("text", "numbers"), [
    ("7.0.15", (7, 0, 15)),
    ("6.2.0", (6, 2, 0)),
    ("5.0.14.1", (5, 0, 14)),  # tporadowski's Windows port
    ("3.0.504", (3, 0, 504)),  # MSOpenTech's Windows port
    ("7.2.0-memurai", (7, 2, 0)),
    ("7", (7, 0, 0)),
    (" 6.2.14 ", (6, 2, 14)),
    ("unknown", None),
    ("", None),
])
def test_parse(text, numbers):
    assert version.parse(text) == numbers


def test_the_version_is_read_from_info_server():
    info = (b"# Server\r\nredis_git_sha1:00000000\r\nredis_version:7.4.9\r\n"
            b"memurai_edition:Memurai Developer\r\nmemurai_version:4.2.3\r\n")
    assert version.from_info(info) == "7.4.9"  # Memurai's Redis-compatible version
    assert version.from_info(b"# Server\r\nvalkey_version:8.0.1\r\n") is None
    assert version.from_info(None) is None


@pytest.mark.parametrize(("found", "refused"), [
    ("5.0.14", True), ("6.0.20", True), ("6.2.0", False), ("6.2.14", False),
    ("7.4.9", False), ("255.255.255", False), (None, False), ("unknown", False)])
def test_too_old(found, refused):
    assert version.too_old(found) is refused


def test_the_refusal_names_the_server_the_version_found_and_the_version_needed():
    with pytest.raises(distpool.UnsupportedRedisError) as raised:
        version.require_minimum("5.0.14", "the Redis at 127.0.0.1:6391 (the broker)")
    message = str(raised.value)
    assert message.startswith("the Redis at 127.0.0.1:6391 (the broker) is version 5.0.14; ")
    assert "Redis 6.2 or newer" in message and "BLMOVE" in message
    assert isinstance(raised.value, distpool.DistpoolError)
    version.require_minimum("6.2.0", "anywhere")  # no error
    version.require_minimum(None, "anywhere")


def test_check_refuses_an_old_server_in_one_command(old):
    connection = Connection(old.url(3))
    try:
        with pytest.raises(distpool.UnsupportedRedisError,
                           match=rf"the Redis at 127\.0\.0\.1:{old.port} \(the broker\) is "
                                 r"version 5\.0\.14; distpool needs Redis 6\.2 or newer"):
            version.check(connection, "broker")
    finally:
        connection.close()
    sent = [command[0] for command in old.commands]
    assert sent == [b"CLIENT", b"CLIENT", b"SELECT", b"INFO"]  # the setup, then one command


def test_a_server_recent_enough_is_checked_once_per_process():
    with OldRedis("6.2.14") as recent:
        first, second = Connection(recent.url()), Connection(recent.url(1))
        try:
            version.check(first, "result store")
            version.check(second, "broker")
        finally:
            first.close()
            second.close()
        assert [command[0] for command in recent.commands
                if command[0] in (b"INFO", b"PING")] == [b"INFO", b"PING"]


def test_a_server_that_does_not_say_its_version_is_let_through(monkeypatch):
    with OldRedis("5.0.14") as server:
        monkeypatch.setattr(server._server, "answer", lambda command: (
            b"-NOPERM this user has no permissions to run the 'info' command\r\n"
            if command[0] == b"INFO" else b"+OK\r\n"))
        connection = Connection(server.url())
        try:
            version.check(connection, "broker")
        finally:
            connection.close()


def test_the_store_ping_refuses_an_old_result_store(old):
    store = RedisStore(old.url())
    try:
        with pytest.raises(distpool.UnsupportedRedisError, match=r"\(the result store\) is "
                                                                 r"version 5\.0\.14"):
            store.ping()
    finally:
        store.close()


def test_check_url_raises_what_the_connection_raises_when_nothing_answers(old):
    port = old.port
    old.stop()
    with pytest.raises(OSError):
        version.check_url(f"redis://127.0.0.1:{port}/0", "broker", timeout=1.0)
