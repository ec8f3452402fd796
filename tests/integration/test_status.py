"""``distpool status``: nodes (from the records their parents publish), queue depth and pools
in flight, as text and as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from celery.app.control import Control

import distpool
from distpool.config import resolve
from distpool.status import cluster_status
from distpool.store import nodes as node_records
from distpool.store.nodes import NodeRecords
from tests.support import environment_without_distpool

pytestmark = pytest.mark.integration

#: The keys of ``distpool status --json``, pinned: scripts rely on them (documented in
#: ``distpool status --help``).
STATUS_KEYS = {"broker", "queue", "queue_depth", "nodes", "pools"}
NODE_KEYS = {"name", "host", "pid", "kind", "alive", "lapsed_for", "started", "slots", "busy",
             "registered", "slot_detail"}
SLOT_KEYS = {"index", "name", "pid", "state", "message", "since", "running_for", "registered"}
POOL_KEYS = {"id", "host", "pid", "processes", "started", "sent", "done", "in_flight"}


def nap(seconds):
    time.sleep(seconds)
    return seconds


def status(cluster, *extra):
    return subprocess.run(
        [sys.executable, "-m", "distpool", "status", "--broker", cluster.broker, "--queue",
         cluster.queue, *extra], env=environment_without_distpool(), capture_output=True,
        text=True, timeout=60)


def settings_of(cluster):
    return resolve(broker=cluster.broker, result_url=cluster.result_url, queue=cluster.queue)


def test_status_lists_one_node_with_its_slots_busy_ones_and_pools_in_flight(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=3)
    with distpool.Pool(3, **cluster.pool_kwargs()) as pool:
        result = pool.map_async(nap, [10, 10, 0.1], chunksize=1)
        time.sleep(2.5)  # two busy, the parent and the collector have reported
        completed = status(cluster, "--json")
        text = status(cluster)
        detail = status(cluster, "--slots")
        result.get(timeout=30)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert set(report) == STATUS_KEYS
    assert report["queue"] == cluster.queue and report["queue_depth"] == 0
    (node,) = report["nodes"]
    assert set(node) == NODE_KEYS
    assert node["name"].startswith(cluster.workers[0].name.partition("@")[0] + "@")
    assert node["pid"] == cluster.workers[0].process.pid
    assert (node["kind"], node["alive"], node["slots"], node["busy"], node["registered"]) == (
        "slots", True, 3, 2, 3)
    assert all(set(slot) == SLOT_KEYS for slot in node["slot_detail"])
    assert [slot["index"] for slot in node["slot_detail"]] == [0, 1, 2]
    busy = [slot for slot in node["slot_detail"] if slot["state"] == "busy"]
    assert sorted(slot["message"] for slot in busy) == [f"{pool._pool_id}:0:0",
                                                         f"{pool._pool_id}:0:1"]
    assert all(0 < slot["running_for"] < 10 and slot["since"] for slot in busy)
    (pool_report,) = report["pools"]
    assert set(pool_report) == POOL_KEYS and pool_report["id"] == pool._pool_id
    assert (pool_report["sent"], pool_report["in_flight"], pool_report["processes"]) == (3, 2, 3)

    assert text.returncode == 0, text.stderr
    assert "nodes: 1 alive of 1, 3 slots, 2 busy" in text.stdout
    assert "2 in flight" in text.stdout
    (line,) = [line for line in text.stdout.splitlines() if node["name"] in line]
    assert line.split()[2:6] == ["slots", "3", "busy", "2"]
    slot_lines = [line.split() for line in detail.stdout.splitlines()
                  if line.strip().startswith("slot ")]
    assert len(slot_lines) == 3 and sum(words[4] == "busy" for words in slot_lines) == 2


def test_status_asks_no_worker_anything(make_cluster, monkeypatch):
    cluster = make_cluster(nodes=2, concurrency=2)

    def no_broadcast(*args, **kwargs):
        raise AssertionError("distpool status waited for workers to answer a broadcast")

    monkeypatch.setattr(Control, "broadcast", no_broadcast)
    monkeypatch.setattr(Control, "inspect", no_broadcast)
    deadline = time.monotonic() + 10
    while True:  # each parent publishes within a second of starting its slots
        report = cluster_status(settings_of(cluster))
        if len(report["nodes"]) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(n["kind"], n["alive"], n["slots"], n["busy"]) for n in report["nodes"]] == [
        ("slots", True, 2, 0)] * 2


def test_a_node_that_stops_is_no_longer_listed(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=1)
    cluster.workers[0].stop()
    completed = status(cluster, "--json")
    assert completed.returncode == 1
    assert json.loads(completed.stdout)["nodes"] == []


def test_a_worker_run_with_a_celery_pool_is_listed_from_its_registration(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2, extra_args=["--pool", "threads"])
    completed = status(cluster, "--json")
    assert completed.returncode == 0, completed.stderr
    (node,) = json.loads(completed.stdout)["nodes"]
    assert (node["kind"], node["alive"], node["slots"], node["busy"], node["slot_detail"]) == (
        "celery", True, 2, None, [])
    text = status(cluster)
    assert "busy   ?  (Celery pool)" in text.stdout


def test_a_record_that_is_not_renewed_lapses_and_is_swept_later(redis_server, monkeypatch):
    records = NodeRecords(redis_server.url(6))
    queue = "lapsing"
    entry = {"host": "h", "pid": 1, "started": 1.0,
             "slots": [{"index": 0, "name": "n-0@h", "pid": 2, "state": "idle",
                        "message": None, "since": None}]}
    try:
        records.publish(queue, "n@h", entry, ttl=0.3)
        [node] = records.read(queue)
        assert node["alive"] and node["slots"] == 1
        time.sleep(0.5)
        [node] = records.read(queue)
        assert not node["alive"] and node["lapsed_for"] > 0
        monkeypatch.setattr(node_records, "LAPSED_KEPT", 0.1)
        records.publish(queue, "other@h", {**entry, "slots": []}, ttl=10)  # sweeps n@h
        assert [node["name"] for node in records.read(queue)] == ["other@h"]
        records.remove(queue, "other@h")
        assert records.read(queue) == []
    finally:
        records.close()


def test_status_exits_non_zero_when_no_node_is_alive(redis_server):
    class Nobody:
        broker = redis_server.url()
        queue = "nobody-serves-this-queue"

    completed = status(Nobody)
    assert completed.returncode == 1
    assert "0 alive of 0" in completed.stdout


def test_workers_log_each_tasks_start_and_end_with_its_ids(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=1)  # test workers run with --loglevel INFO
    with distpool.Pool(1, **cluster.pool_kwargs()) as pool:
        pool.apply(nap, (0,))
        task_id = f"{pool._pool_id}:0:0"
    log = cluster.workers[0].log()
    assert f"task {task_id} of pool {pool._pool_id} started" in log
    assert f"task {task_id} of pool {pool._pool_id} succeeded in" in log
