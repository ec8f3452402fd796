"""``distpool status``: workers, queue depth and pools in flight, as text and as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import distpool
from tests.support import environment_without_distpool

pytestmark = pytest.mark.integration


def nap(seconds):
    time.sleep(seconds)
    return seconds


def status(cluster, *extra):
    return subprocess.run(
        [sys.executable, "-m", "distpool", "status", "--broker", cluster.broker, "--queue",
         cluster.queue, *extra], env=environment_without_distpool(), capture_output=True,
        text=True, timeout=60)


def test_status_shows_workers_busy_slots_and_pools_in_flight(make_cluster):
    cluster = make_cluster(nodes=2, concurrency=1)
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        # Long enough to outlast both status commands (about 2 s each, with start-up).
        result = pool.map_async(nap, [10, 10, 0.1, 0.1], chunksize=1)
        time.sleep(2.5)  # both busy, the collector has reported
        completed = status(cluster, "--json")
        text = status(cluster)
        result.get(timeout=30)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert [w["slots"] for w in report["workers"]] == [1, 1]
    assert all(w["answering"] and w["busy"] == 1 for w in report["workers"])
    assert report["queue"] == cluster.queue and report["queue_depth"] == 0
    (pool_report,) = report["pools"]
    assert pool_report["id"] == pool._pool_id
    assert (pool_report["sent"], pool_report["in_flight"], pool_report["processes"]) == (2, 2, 2)
    assert text.returncode == 0 and "2 answering" in text.stdout and "2 in flight" in text.stdout


def test_status_exits_non_zero_when_no_worker_answers(redis_server):
    class Nobody:
        broker = redis_server.url()
        queue = "nobody-serves-this-queue"

    completed = status(Nobody)
    assert completed.returncode == 1
    assert "0 answering" in completed.stdout


def test_workers_log_each_tasks_start_and_end_with_its_ids(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=1)  # test workers run with --loglevel INFO
    with distpool.Pool(1, **cluster.pool_kwargs()) as pool:
        pool.apply(nap, (0,))
        task_id = f"{pool._pool_id}:0:0"
    log = cluster.workers[0].log()
    assert f"task {task_id} of pool {pool._pool_id} started" in log
    assert f"task {task_id} of pool {pool._pool_id} succeeded in" in log
