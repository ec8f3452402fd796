"""``distpool worker --pool solo --concurrency N``: the process model for Windows servers."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import distpool

pytestmark = pytest.mark.integration


def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()


def solo_children(worker):
    return psutil.Process(worker.process.pid).children()


def pids_serving(pool, expected, timeout=30):
    """The pids that run the pool's tasks, once they are ``expected`` many: a worker that has
    just registered may not be consuming yet."""
    deadline = time.monotonic() + timeout
    while True:
        pids = set(pool.map(pid_after, [0.3] * 4, chunksize=1))
        if len(pids) == expected or time.monotonic() > deadline:
            return pids


def test_n_single_process_workers_serve_and_a_dead_one_is_replaced(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2, extra_args=["--pool", "solo"])
    parent = cluster.workers[0]
    children = solo_children(parent)
    assert len(children) == 2
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        # The tasks run in the two workers themselves: no pool processes below them.
        assert pids_serving(pool, 2) == {child.pid for child in children}
        children[0].send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(solo_children(parent)) < 2 or children[0].pid in {
                c.pid for c in solo_children(parent)}:
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        replacement = {c.pid for c in solo_children(parent)} - {children[1].pid}
        assert pids_serving(pool, 2) == {children[1].pid, *replacement}


def test_terminate_stops_a_task_running_on_a_solo_worker(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2, extra_args=["--pool", "solo"])
    pool = distpool.Pool(2, **cluster.pool_kwargs())
    pool.map_async(pid_after, [60, 60], chunksize=1)
    time.sleep(1.0)
    pool.terminate()
    pool.join()
    started = time.monotonic()
    with distpool.Pool(2, **cluster.pool_kwargs()) as other:
        assert len(other.map(pid_after, [0.1, 0.1], chunksize=1)) == 2
    assert time.monotonic() - started < 20  # the watchdog, not the 60 s sleeps
