"""``maxtasksperchild`` replaces the process that runs the tasks, in both pools: CPython's
_TestPoolWorkerLifetime.test_pool_worker_lifetime, observed through the tasks' pids rather
than ``multiprocessing.Pool``'s private worker list.

The tasks sleep 20 ms: distpool's client packs tasks it measures shorter than 5 ms several to
a message, and a worker's process is replaced only between messages.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import Any


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_maxtasksperchild_1_runs_each_task_in_a_new_process(make_pool: Callable[..., Any]) -> None:
    pool = make_pool(2, maxtasksperchild=1)
    pids = pool.map(pid_after, [0.02] * 10, chunksize=1)
    assert len(set(pids)) == 10, pids


def test_a_process_runs_at_most_maxtasksperchild_tasks(make_pool: Callable[..., Any]) -> None:
    pool = make_pool(2, maxtasksperchild=3)
    # More tasks than 3 to each of the shared cluster's 4 slots.
    pids = pool.map(pid_after, [0.02] * 24, chunksize=1)
    assert max(collections.Counter(pids).values()) <= 3, pids


def test_a_chunk_is_one_task(make_pool: Callable[..., Any]) -> None:
    pool = make_pool(2, maxtasksperchild=2)
    pids = pool.map(pid_after, [0.01] * 48, chunksize=3)
    chunks = [pids[start:start + 3] for start in range(0, 48, 3)]
    assert all(len(set(chunk)) == 1 for chunk in chunks), pids
    # A process runs two chunks (6 items), not two items, and no more.
    assert max(collections.Counter(pids).values()) == 6, pids
