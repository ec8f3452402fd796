"""The default process model: one worker process per slot, under one parent.

The reliability tests (test_reliability.py) run on it too; these check what is its own:
slots are separate Celery nodes, replaced when they die, and the parent's work (putting a
dead slot's message back, counting attempts, killing a slot past its time limit) also works
when slots start as fresh interpreters, as on Windows.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import psutil
import pytest

import distpool
from distpool.errors import TaskTimeoutError, WorkerLostError
from tests.support import Worker, ignore_the_soft_limit, slot_processes

pytestmark = pytest.mark.integration


def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()


def pids_serving(pool, expected, timeout=30):
    """The pids that run the pool's tasks, once they are ``expected`` many: a worker that has
    just registered may not be consuming yet."""
    deadline = time.monotonic() + timeout
    while True:
        pids = set(pool.map(pid_after, [0.3] * 4, chunksize=1))
        if len(pids) == expected or time.monotonic() > deadline:
            return pids


def test_n_single_process_workers_serve_and_a_dead_one_is_replaced(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2)
    parent = cluster.workers[0]
    children = slot_processes(parent)
    assert len(children) == 2
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        # The tasks run in the two slots themselves: no pool processes below them.
        assert pids_serving(pool, 2) == {child.pid for child in children}
        children[0].send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            pids = {c.pid for c in slot_processes(parent)}
            if len(pids) == 2 and children[0].pid not in pids:
                break
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        replacement = pids - {children[1].pid}
        assert pids_serving(pool, 2) == {children[1].pid, *replacement}


def test_terminate_stops_a_task_running_on_a_slot(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2)
    pool = distpool.Pool(2, **cluster.pool_kwargs())
    pool.map_async(pid_after, [60, 60], chunksize=1)
    time.sleep(1.0)
    pool.terminate()
    pool.join()
    started = time.monotonic()
    with distpool.Pool(2, **cluster.pool_kwargs()) as other:
        assert len(other.map(pid_after, [0.1, 0.1], chunksize=1)) == 2
    assert time.monotonic() - started < 20  # not the 60 s sleeps


def exit_my_process():
    os._exit(3)


def test_slots_started_as_fresh_interpreters_as_on_windows(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2, start_method="spawn",
                           extra_args=["--worker-lost-timeout", "60"])
    with distpool.Pool(2, task_timeout=1, **cluster.pool_kwargs()) as pool:
        assert len(pids_serving(pool, 2)) == 2
        started = time.monotonic()
        # Back on the queue at once, not after the 60 s worker_lost_timeout; three tries.
        with pytest.raises(WorkerLostError, match="died 3 times"):
            pool.apply(exit_my_process)
        with pytest.raises(TaskTimeoutError, match="task_timeout"):
            pool.apply(ignore_the_soft_limit, (60,))
        assert time.monotonic() - started < 45
        assert len(pids_serving(pool, 2)) == 2


def test_max_tasks_per_child_replaces_a_slot_process_after_that_many_tasks(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=1, extra_args=["--max-tasks-per-child", "2"])
    with distpool.Pool(1, **cluster.pool_kwargs()) as pool:
        pids = [pool.apply(pid_after, (0,)) for _ in range(6)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_slots_shut_down_when_their_parent_is_killed_outright(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2)
    parent = psutil.Process(cluster.workers[0].process.pid)
    slots = slot_processes(cluster.workers[0])
    assert len(slots) == 2
    parent.send_signal(signal.SIGKILL)
    _, alive = psutil.wait_procs(slots, timeout=20)
    assert alive == [], "slots serve on without their parent"


def test_the_parent_logs_at_the_nodes_loglevel_and_a_slot_logs_each_record_once(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=1)  # --loglevel INFO
    worker = cluster.workers[0]
    with distpool.Pool(1, **cluster.pool_kwargs()) as pool:
        pool.apply(pid_after, (0,))
    log = worker.log()
    node = worker.name.replace("%h", socket.gethostname())
    assert f"INFO/{node}] slot 0 started: pid" in log
    # A forked slot drops the parent's handler: Celery's own alone writes its records.
    assert len(re.findall(r"task \S+ of pool \S+ started", log)) == 1, log


def stopped_node(cluster, how):
    """Stop the node's parent as ``how`` says, and return what its log says it did."""
    worker = cluster.workers[0]
    if how == "SIGTERM":  # to the parent alone: on Windows nothing can reach the slots so
        os.kill(worker.process.pid, signal.SIGTERM)
    else:  # a console's Ctrl-C reaches every process of the group, the slots too
        os.killpg(worker.process.pid, signal.SIGINT)
    assert worker.process.wait(60) == 0
    return worker.log()


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_a_stopped_node_lets_its_running_tasks_finish(make_cluster, how):
    cluster = make_cluster(nodes=1, concurrency=2)
    # A slot that ended while it watched the node's stop must not hang the stop (as a
    # multiprocessing.Event's set() hangs once a waiter died: python/cpython#75158).
    killed = slot_processes(cluster.workers[0])[0]
    killed.kill()
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        assert killed.pid not in pids_serving(pool, 2)
        running = pool.map_async(pid_after, [4, 4], chunksize=1)
        time.sleep(1.5)
        log = stopped_node(cluster, how)
        assert len(set(running.get(timeout=10))) == 2  # finished where they ran
    assert f"stopping ({how}): running tasks get 30 s to finish" in log
    assert "killing it" not in log


def test_a_task_still_running_at_the_stop_timeout_is_put_back_and_runs_elsewhere(
        make_cluster):
    # --worker-lost-timeout 120: put back at once, or the other node would not get it in time.
    stopped = make_cluster(nodes=1, concurrency=1,
                           extra_args=["--stop-timeout", "1", "--worker-lost-timeout", "120"])
    with distpool.Pool(1, **stopped.pool_kwargs()) as pool:
        first = pool.apply(pid_after, (0,))
        result = pool.apply_async(pid_after, (6,))
        time.sleep(1.5)
        log = stopped_node(stopped, "SIGTERM")
        assert re.search(r"slot 0 \(pid \d+\) still running message \S+; killing it, putting "
                         r"the message back on the queue", log), log
        other = Worker(stopped.broker, stopped.queue, 1, stopped.result_url,
                       secret=stopped.secret)
        try:
            assert result.get(timeout=60) != first
        finally:
            other.stop()
