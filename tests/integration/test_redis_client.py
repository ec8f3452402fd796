"""distpool's own Redis connection against a real Redis: what redis-py's did for it (identity,
AUTH and SELECT, health checks, retries, forks, Unix sockets), it does too."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
import redis

from distpool.redis_client.connection import Connection
from distpool.redis_client.protocol import RedisConnectionError, ReplyError
from distpool.retry import RetryPolicy
from tests.support import find_redis_server, free_port, stop_process_group

pytestmark = pytest.mark.integration

NO_RETRY = RetryPolicy(retries=0)


def kill_connections(redis_server) -> None:
    redis.Redis.from_url(redis_server.url()).client_kill_filter(_type="normal", skipme=True)


def test_a_connection_selects_its_database_and_names_itself_where_redis_can_say(redis_server):
    connection = Connection(redis_server.url(7))
    connection.run([("SET", "named", "1")])  # a Redis before 7.2 refuses the name: harmless
    assert redis.Redis.from_url(redis_server.url(7)).get("named") == b"1"
    admin = redis.Redis.from_url(redis_server.url())
    version = tuple(int(part) for part in admin.info("server")["redis_version"].split(".")[:2])
    if version >= (7, 2):
        names = {client.get("lib-name") for client in admin.client_list() if client["db"] == "7"}
        assert names == {"distpool"}
    connection.close()


def test_an_acl_user_logs_in_and_a_wrong_password_is_refused_by_name(redis_server):
    admin = redis.Redis.from_url(redis_server.url())
    admin.acl_setuser("conn-user", enabled=True, passwords=["+pw"], keys=["*"],
                      commands=["+@all"])
    try:
        port = redis_server.port
        good = Connection(f"redis://conn-user:pw@127.0.0.1:{port}/2")
        assert good.run([("ACL", "WHOAMI")]) == [b"conn-user"]
        good.close()
        bad = Connection(f"redis://conn-user:nope@127.0.0.1:{port}/2")
        with pytest.raises(ReplyError, match=r"Redis at 127.0.0.1:\d+ refused the "
                                             r"connection: WRONGPASS"):
            bad.run([("PING",)])
        bad.close()
    finally:
        admin.acl_deluser("conn-user")


def test_a_command_error_leaves_the_connection_in_step(redis_server):
    connection = Connection(redis_server.url())
    connection.run([("SET", "a-string", "x")])
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        connection.run([("LPUSH", "a-string", "1"), ("SET", "after", "2")])
    assert connection.run([("GET", "after"), ("CLIENT", "ID")])[0] == b"2"  # ran, in step
    [first_id] = connection.run([("CLIENT", "ID")])
    with pytest.raises(ReplyError):
        connection.read_values_into([("LPUSH", "a-string", "1"), ("GET", "after")],
                                    memoryview(bytearray(8)))
    assert connection.run([("CLIENT", "ID")]) == [first_id]  # the same connection
    connection.close()


def test_a_connection_idle_past_its_health_check_is_pinged_before_a_command(redis_server):
    # Without retries, a command sent down a connection Redis dropped while it was idle
    # fails; the health check finds it dead first, so the command (not idempotent) runs
    # once, on a new connection.
    checked = Connection(redis_server.url(), retry=NO_RETRY, health_check_interval=0.1)
    unchecked = Connection(redis_server.url(), retry=NO_RETRY, health_check_interval=60)
    for connection in (checked, unchecked):
        connection.run([("DEL", "counter")])
    kill_connections(redis_server)
    time.sleep(0.2)
    assert checked.run([("INCR", "counter")]) == [1]
    with pytest.raises(RedisConnectionError, match=r"Redis at 127.0.0.1:\d+"):
        unchecked.run([("INCR", "counter")])
    assert unchecked.run([("GET", "counter")]) == [b"1"]  # and reconnects at the next call
    checked.close()
    unchecked.close()


def test_a_call_is_retried_on_a_new_connection_after_redis_dropped_it(redis_server):
    connection = Connection(redis_server.url())
    [before] = connection.run([("CLIENT", "ID")])
    kill_connections(redis_server)
    [after] = connection.run([("CLIENT", "ID")])
    assert after != before
    connection.close()


def test_an_unreachable_redis_fails_the_call_in_bounded_time_naming_it():
    port = free_port()
    connection = Connection(f"redis://127.0.0.1:{port}/0",
                               retry=RetryPolicy(retries=3, base=0.05, jitter=False))
    started = time.monotonic()
    with pytest.raises(RedisConnectionError, match=f"Redis at 127.0.0.1:{port}: .*refused"):
        connection.run([("PING",)])
    assert time.monotonic() - started < 5  # 0.1 + 0.2 + 0.4 s of backoff


def test_a_closed_connection_stays_closed_and_wakes_a_blocked_pop(redis_server):
    connection = Connection(redis_server.url())
    failed: list[BaseException] = []

    def pop() -> None:
        try:
            connection.run([("BLPOP", "never-filled", 30)])
        except BaseException as exc:
            failed.append(exc)

    popping = threading.Thread(target=pop)
    popping.start()
    time.sleep(0.3)
    connection.close()
    popping.join(5)
    assert not popping.is_alive() and isinstance(failed[0], RedisConnectionError)
    with pytest.raises(RedisConnectionError, match="closed"):
        connection.run([("PING",)])


def test_a_forked_child_opens_its_own_socket_and_leaves_its_parents_alone(redis_server):
    connection = Connection(redis_server.url())
    [parent_id] = connection.run([("CLIENT", "ID")])
    pid = os.fork()
    if pid == 0:  # the child: uses, then closes, its copy
        try:
            [child_id] = connection.run([("CLIENT", "ID")])
            connection.close()
            os._exit(0 if child_id != parent_id else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert connection.run([("CLIENT", "ID")]) == [parent_id]  # still open, the same one
    connection.close()


def test_a_forked_child_does_not_wait_for_replies_its_parent_was_sent(redis_server):
    connection = Connection(redis_server.url())
    connection.run([("DEL", "forked-counter")])
    sent = connection.send([("INCR", "forked-counter")])  # its reply comes on the parent's socket
    pid = os.fork()
    if pid == 0:
        try:
            ours = connection.run([("GET", "forked-counter")], reply_timeout=5)
            try:
                sent.get()
                os._exit(3)  # read a reply that was its parent's
            except RedisConnectionError:
                os._exit(0 if ours == [b"1"] else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sent.get() == [1]  # the parent reads its own
    connection.close()


def test_a_reply_that_takes_longer_than_the_timeout_fails_the_call(redis_server):
    connection = Connection(redis_server.url(), timeout=0.2, retry=NO_RETRY)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError, match="timed out"):
        connection.run([("BLPOP", "never-filled", 5)])
    assert time.monotonic() - started < 2
    connection.close()


def test_a_unix_socket_url_reaches_redis(tmp_path):
    executable = find_redis_server()
    path = tmp_path / "redis.sock"
    server = subprocess.Popen(
        [executable, "--port", "0", "--unixsocket", str(path), "--save", "", "--appendonly",
         "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        connection = Connection(f"unix://{path}?db=3")
        assert connection.run([("SET", "k", "v"), ("GET", "k")]) == [b"OK", b"v"]
        connection.close()
    finally:
        stop_process_group(server)


def test_a_redis_at_its_client_limit_is_named_as_the_reason_and_tried_again(redis_server):
    admin = redis.Redis.from_url(redis_server.url())
    limit = admin.config_get("maxclients")["maxclients"]
    connection = Connection(redis_server.url(),
                               retry=RetryPolicy(retries=2, base=0.05, jitter=False))
    admin.config_set("maxclients", int(admin.info("clients")["connected_clients"]))
    try:
        with pytest.raises(RedisConnectionError, match="refused the connection: "
                                                       "ERR max number of clients reached"):
            connection.run([("PING",)])
    finally:
        admin.config_set("maxclients", limit)
    assert connection.run([("PING",)]) == [b"PONG"]  # a room again: it connects
    connection.close()
