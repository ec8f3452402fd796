"""A running task survives its broker: restarts and dropped connections neither kill it nor
run it twice, and its result arrives after reconnection."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import distpool
from tests.support import Cluster

pytestmark = pytest.mark.integration

#: Short, so that a hold lost with the connection would hand the message out again in time
#: for the test to see it.
OPTIONS = ["--worker-lost-timeout", "3"]


def record_run(path, seconds):
    with open(path, "a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return os.getpid()


def runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def wait_for_start(log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not runs(log):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)


@pytest.fixture
def cluster_on_persistent_redis(make_cluster_on_own_redis):
    """Two slots on a Redis of its own that keeps an append-only file."""
    return make_cluster_on_own_redis(persistent=True, concurrency=2, extra_args=OPTIONS)


def test_a_running_task_survives_restarts_of_a_persistent_redis(cluster_on_persistent_redis,
                                                                tmp_path):
    cluster = cluster_on_persistent_redis
    log = tmp_path / "runs.log"
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        result = pool.apply_async(record_run, (str(log), 14))
        wait_for_start(log)
        for _ in range(3):
            cluster.redis.restart(down_for=1.0)
            time.sleep(1.5)
        assert result.get(timeout=60) == int(runs(log)[0])
        assert pool.apply(len, ("abc",)) == 3  # and the pool goes on
    assert len(runs(log)) == 1, "the task ran more than once"


def test_a_running_task_survives_every_connection_being_dropped(make_cluster, tmp_path):
    cluster = make_cluster(nodes=1, concurrency=2, extra_args=OPTIONS)
    log = tmp_path / "runs.log"
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        result = pool.apply_async(record_run, (str(log), 10))
        wait_for_start(log)
        for _ in range(2):
            cluster.redis.client.client_kill_filter(_type="normal", skipme=True)
            time.sleep(2.5)
        assert result.get(timeout=60) == int(runs(log)[0])
    assert len(runs(log)) == 1, "the task ran more than once"


def _rabbitmq_controllable() -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        return False
    return subprocess.run(["rabbitmqctl", "status"], capture_output=True,
                          timeout=60).returncode == 0


@pytest.mark.skipif(not _rabbitmq_controllable(), reason="no RabbitMQ to restart here")
def test_a_running_task_survives_a_rabbitmq_restart(redis_server, tmp_path):
    cluster = Cluster(redis_server, nodes=1, concurrency=2,
                      broker="amqp://guest:guest@127.0.0.1:5672//")
    log = tmp_path / "runs.log"
    try:
        with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
            result = pool.apply_async(record_run, (str(log), 20))
            wait_for_start(log)
            subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True,
                           timeout=60)
            try:
                time.sleep(3)
            finally:
                subprocess.run(["rabbitmqctl", "start_app"], check=True,
                               capture_output=True, timeout=60)
            assert result.get(timeout=90) == int(runs(log)[0])
        assert len(runs(log)) == 1, ("the task ran more than once:\n"
                                     + cluster.workers[0].log()[-5000:])
    finally:
        cluster.stop()
