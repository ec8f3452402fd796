"""``Pool(maxtasksperchild=k)`` replaces the worker's process, as multiprocessing does: a slot
runs at most k tasks of the pool (a chunk is one task), then ends after its message, and its
parent forks a fresh one at once, without the backoff of a slot that failed."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import distpool
from distpool.worker.slots.child import RETIRE_GRACE
from tests.support import Cluster

pytestmark = pytest.mark.integration

MakeCluster = Callable[..., Cluster]

#: What each task sleeps: longer than the client's SHORT_TASK (5 ms), so that it sends one
#: task per message, as it does for any task that is not measured to be short.
TASK_SECONDS = 0.02


def recorded_pid(record: str, item: int) -> int:
    """Append ``item pid`` to the file ``record`` (one line per run, however many runs)."""
    time.sleep(TASK_SECONDS)
    with open(record, "a") as file:
        file.write(f"{item} {os.getpid()}\n")
    return os.getpid()


def pid_after(item: int) -> int:
    time.sleep(TASK_SECONDS)
    return os.getpid()


def getpid(_: object) -> int:
    return os.getpid()


def runs(record: Path) -> collections.Counter[int]:
    """How many times each item was run."""
    return collections.Counter(int(line.split()[0]) for line in record.read_text().split("\n")
                               if line)


def test_maxtasksperchild_1_runs_each_task_once_in_a_process_of_its_own(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(nodes=1, concurrency=2)
    record = tmp_path / "runs"
    with distpool.Pool(2, maxtasksperchild=1, **cluster.pool_kwargs()) as pool:
        started = time.monotonic()
        pids = pool.starmap(recorded_pid, [(str(record), item) for item in range(10)],
                            chunksize=1)
        elapsed = time.monotonic() - started
    assert len(set(pids)) == 10, pids
    assert runs(record) == {item: 1 for item in range(10)}
    # Five replacements a slot, none delayed by a failed slot's backoff (1 s, then 2, 4...).
    assert elapsed < 8, elapsed
    log = cluster.workers[0].log()
    assert "ended itself" in log, log
    assert "died" not in log and "restarting it in" not in log, log


def test_maxtasksperchild_3_runs_at_most_3_tasks_in_a_process(make_cluster: MakeCluster,
                                                                 tmp_path: Path) -> None:
    cluster = make_cluster(nodes=1, concurrency=2)
    record = tmp_path / "runs"
    with distpool.Pool(2, maxtasksperchild=3, **cluster.pool_kwargs()) as pool:
        pids = pool.starmap(recorded_pid, [(str(record), item) for item in range(20)],
                            chunksize=1)
    per_process = collections.Counter(pids)
    assert max(per_process.values()) <= 3, per_process
    assert runs(record) == {item: 1 for item in range(20)}


def test_the_limit_counts_chunks_as_multiprocessing_does(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(nodes=1, concurrency=1)
    with distpool.Pool(1, maxtasksperchild=2, **cluster.pool_kwargs()) as pool:
        # 4 chunks of 3 items: a chunk is one task, so each process runs two chunks.
        pids = pool.map(pid_after, range(12), chunksize=3)
    assert pids == [pids[0]] * 6 + [pids[6]] * 6 and pids[0] != pids[6], pids


def test_a_pool_without_a_limit_shares_the_slots_unharmed(make_cluster: MakeCluster,
                                                          tmp_path: Path) -> None:
    cluster = make_cluster(nodes=1, concurrency=2)
    limited, unlimited = tmp_path / "limited", tmp_path / "unlimited"
    with distpool.Pool(2, maxtasksperchild=1, **cluster.pool_kwargs()) as pool_a, \
            distpool.Pool(2, **cluster.pool_kwargs()) as pool_b:
        a = pool_a.starmap_async(recorded_pid, [(str(limited), item) for item in range(10)],
                                 chunksize=1)
        b = pool_b.starmap_async(recorded_pid, [(str(unlimited), item) for item in range(30)],
                                 chunksize=1)
        pids_a, pids_b = a.get(timeout=60), b.get(timeout=60)
    assert len(set(pids_a)) == 10, pids_a
    assert len(pids_b) == 30
    assert runs(limited) == {item: 1 for item in range(10)}
    assert runs(unlimited) == {item: 1 for item in range(30)}


def test_maxtasksperchild_1_with_tasks_too_short_to_measure(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(nodes=1, concurrency=2)
    with distpool.Pool(2, maxtasksperchild=1, **cluster.pool_kwargs()) as pool:
        pids = pool.map(getpid, range(10), chunksize=1)
    assert len(set(pids)) == 10, pids


def test_prefork_cannot_replace_its_process_and_starts_the_pools_state_afresh(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(nodes=1, concurrency=1, extra_args=["--pool", "prefork"])
    with distpool.Pool(1, initializer=count_initialisation, maxtasksperchild=2,
                       **cluster.pool_kwargs()) as pool:
        seen = pool.map(initialisations_and_pid, range(6), chunksize=1)
    assert [count for count, _ in seen] == [1, 1, 2, 2, 3, 3]
    assert len({pid for _, pid in seen}) == 1


_initialised = {"count": 0}


def count_initialisation() -> None:
    _initialised["count"] += 1


def initialisations_and_pid(_: object) -> tuple[int, int]:
    time.sleep(TASK_SECONDS)
    return _initialised["count"], os.getpid()


def leave_a_thread_running() -> int:
    threading.Thread(target=time.sleep, args=(600,), name="simulator-heartbeat").start()
    return os.getpid()


def test_a_thread_left_running_by_a_task_does_not_keep_the_slot_from_retiring(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(nodes=1, concurrency=1)
    with distpool.Pool(1, maxtasksperchild=1, **cluster.pool_kwargs()) as pool:
        first = pool.apply(leave_a_thread_running)
        started = time.monotonic()
        assert pool.apply_async(os.getpid).get(timeout=30) != first
    assert time.monotonic() - started < RETIRE_GRACE + 10
    assert "ended without them: simulator-heartbeat" in cluster.workers[0].log()
