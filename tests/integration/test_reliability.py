"""Never starve, always stoppable, nothing lost: against real workers on several nodes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded

import distpool
from distpool.errors import TaskTimeoutError, WorkerLostError
from tests.support import (
    EXIT_TIMEOUT,
    WINDOWS_MODE,
    exit_status,
    ignore_the_soft_limit,
    stop_process_group,
)

SCRIPTS = Path(__file__).parent / "scripts"

pytestmark = pytest.mark.integration

#: The worker options of each process model: slots (the default) and Celery's prefork (not in
#: the simulated-Windows mode: Windows refuses it).
PROCESS_MODELS = {"slots": [], **({} if WINDOWS_MODE else {"prefork": ["--pool", "prefork"]})}
with_each_process_model = pytest.mark.parametrize("model", PROCESS_MODELS)


def square(x):
    return x * x


def kill_my_process():
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_for(seconds):
    time.sleep(seconds)
    return os.getpid()


def nap_for(seconds):
    """Sleeps in short naps: on slots, the soft time limit is raised between two of them."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


def timed(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time(), os.getpid()


def record_run(args):
    path, seconds = args
    with open(path, "a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return os.getpid()


def worker_pids(worker):
    """The node's main process and its pool processes."""
    import psutil

    main = psutil.Process(worker.process.pid)
    return {main.pid, *(child.pid for child in main.children(recursive=True))}


@with_each_process_model
def test_a_task_that_keeps_killing_its_worker_fails_after_bounded_attempts(make_cluster, model):
    cluster = make_cluster(nodes=1, concurrency=2, extra_args=PROCESS_MODELS[model])
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        started = time.monotonic()
        with pytest.raises(WorkerLostError, match="died 3 times"):
            pool.apply(kill_my_process)
        assert time.monotonic() - started < 30
        assert pool.apply(square, (3,)) == 9  # the workers serve on


@with_each_process_model
def test_task_timeout_fails_a_runaway_task_and_frees_its_slot(make_cluster, model):
    cluster = make_cluster(nodes=1, concurrency=1, extra_args=PROCESS_MODELS[model])
    with distpool.Pool(1, task_timeout=1, **cluster.pool_kwargs()) as pool:
        with pytest.raises(SoftTimeLimitExceeded):
            pool.apply(nap_for, (30,))
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError, match="task_timeout"):
            pool.apply(ignore_the_soft_limit, (60,))
        assert time.monotonic() - started < 15  # the hard limit: 1 s + 5 s of grace
        assert pool.apply(square, (4,)) == 16


def test_no_queued_task_waits_while_a_slot_is_idle(make_cluster):
    # The mix that starves Celery's defaults: 2 nodes x 2 processes, chunksize 1.
    cluster = make_cluster(nodes=2, concurrency=2)
    durations = [2, 0.05, 2, 0.05] + [0.25] * 8
    with distpool.Pool(4, **cluster.pool_kwargs()) as pool:
        # Every process consuming and warm (this module imported), with tasks too long to
        # share a message; a node that has just registered may not be consuming yet.
        deadline = time.monotonic() + 30
        while len({pid for _, _, pid in pool.map(timed, [0.3] * 4, chunksize=1)}) < 4:
            assert time.monotonic() < deadline, "not every worker process serves"
        submitted = time.time()
        runs = pool.map(timed, durations, chunksize=1)
    # Dispatch latency (result back, publish, hand-off): a slot that freed less than this
    # long ago is being refilled, not idle.
    tolerance = 0.15
    for index, (start, _, _) in enumerate(runs):
        t = submitted + tolerance
        while t < start - tolerance:
            busy = len({pid for s, e, pid in runs if s <= t < e + tolerance})
            assert busy == 4, (f"task {index} waited at {t - submitted:.2f} s while "
                               f"{4 - busy} slot(s) were idle")
            t += 0.01
    assert len({pid for _, _, pid in runs}) == 4


def test_the_tasks_of_a_dead_worker_node_run_on_the_other_nodes(make_cluster):
    cluster = make_cluster(nodes=2, concurrency=1, extra_args=["--worker-lost-timeout", "3"])
    doomed, survivor = cluster.workers
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        result = pool.map_async(sleep_for, [4, 4], chunksize=1)
        time.sleep(1.5)  # one task on each node
        survivor_pids = worker_pids(survivor)
        doomed.stop(signal.SIGKILL)  # the node and its children, at once
        pids = result.get(timeout=40)
    assert set(pids) <= survivor_pids


@with_each_process_model
def test_a_long_task_is_never_handed_to_a_second_worker(make_cluster, tmp_path, model):
    cluster = make_cluster(nodes=2, concurrency=1,
                           extra_args=["--worker-lost-timeout", "2", *PROCESS_MODELS[model]])
    log = tmp_path / "runs.log"
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        pool.apply(record_run, ((str(log), 8),))  # four times the visibility timeout
    assert len(log.read_text().splitlines()) == 1


def test_terminate_leaves_nothing_queued_in_the_broker(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2)
    broker = cluster.redis.client
    pool = distpool.Pool(2, **cluster.pool_kwargs())
    pool.map_async(sleep_for, [30] * 50, chunksize=1)
    time.sleep(1.0)
    pool.terminate()
    pool.join()
    deadline = time.monotonic() + 5
    while broker.llen(cluster.queue) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert broker.llen(cluster.queue) == 0
    # A handful of lines per node, not one warning per revoked id per slot.
    assert "Failed to mark task" not in cluster.workers[0].log()


def hold_the_gil():
    """Native code that never lets another thread of its process run: no signal handler, no
    watchdog, no remote control there (builtin sum over a range is one bytecode)."""
    return sum(range(10**12))


@with_each_process_model
def test_terminate_stops_a_task_that_holds_the_gil(make_cluster, model):
    cluster = make_cluster(nodes=1, concurrency=1, extra_args=PROCESS_MODELS[model])
    pool = distpool.Pool(1, **cluster.pool_kwargs())
    assert pool.apply(square, (2,)) == 4
    pool.apply_async(hold_the_gil)
    time.sleep(1.5)
    pool.terminate()
    pool.join()
    started = time.monotonic()
    with distpool.Pool(1, **cluster.pool_kwargs()) as other:
        assert other.apply(square, (3,)) == 9
    assert time.monotonic() - started < 30  # not the task's hour


def test_a_threads_worker_says_once_per_pool_that_it_cannot_enforce_task_timeout(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2, extra_args=["--pool", "threads"])
    with distpool.Pool(2, task_timeout=30, **cluster.pool_kwargs()) as pool:
        assert pool.map(square, range(6), chunksize=1) == [x * x for x in range(6)]
        pool_id = pool._pool_id
    with distpool.Pool(2, **cluster.pool_kwargs()) as untimed:
        assert untimed.map(square, range(3), chunksize=1) == [0, 1, 4]
    log = cluster.workers[0].log()
    assert log.count("sets a task_timeout, which this worker cannot enforce") == 1, log
    assert f"pool {pool_id} sets a task_timeout" in log


def test_ctrl_c_in_the_client_stops_the_pools_work(make_cluster, tmp_path):
    cluster = make_cluster(nodes=1, concurrency=2)
    errors = tmp_path / "client.err"
    with open(errors, "w") as stderr:
        client = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "submit_and_wait.py"), cluster.broker, cluster.queue,
             str(tmp_path), "60"], stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]),
                 "DISTPOOL_SECRET": cluster.secret})
    try:
        assert client.stdout.readline().strip() == "submitted"
        time.sleep(1.0)
        client.send_signal(signal.SIGINT)
        # What matters is that it exits, and stops its work; how soon, the benchmarks say
        # (about 0.3 s quiet, 0.7 s on a loaded machine).
        assert exit_status(client, within=EXIT_TIMEOUT, stacks_in=errors) != 0
        assert "KeyboardInterrupt" in errors.read_text()
        assert_logs_stop_growing(tmp_path, within=5)
    finally:
        stop_process_group(client)
        client.stdout.close()
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        started = time.monotonic()
        assert pool.map(square, range(4), chunksize=1) == [0, 1, 4, 9]
        assert time.monotonic() - started < 5


def test_the_work_of_a_dead_client_stops_within_its_pool_ttl(make_cluster, tmp_path):
    cluster = make_cluster(nodes=1, concurrency=2)
    client = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "submit_and_wait.py"), cluster.broker, cluster.queue,
         str(tmp_path), "2"], stdout=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]),
             "DISTPOOL_SECRET": cluster.secret})
    try:
        assert client.stdout.readline().strip() == "submitted"
        time.sleep(1.0)
        client.kill()
        client.wait()
        # The liveness key lapses after pool_ttl (2 s); a watchdog notices within 2 s more.
        assert_logs_stop_growing(tmp_path, within=8)
    finally:
        stop_process_group(client)
        client.stdout.close()


def assert_logs_stop_growing(directory, within):
    def total():
        return sum(p.stat().st_size for p in Path(directory).glob("*.log"))

    deadline = time.monotonic() + within
    while True:
        before = total()
        time.sleep(1.0)
        if total() == before:
            return
        assert time.monotonic() < deadline, "the pool's tasks are still running"


def test_a_map_survives_the_broker_dropping_every_connection(make_cluster):
    cluster = make_cluster(nodes=2, concurrency=1, extra_args=["--worker-lost-timeout", "3"])
    killer = threading.Timer(1.0, lambda: cluster.redis.client.client_kill_filter(
        _type="normal", skipme=True))
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        killer.start()
        results = pool.map(sleep_for, [0.1] * 40, chunksize=1)
    killer.join()
    assert len(results) == 40


@pytest.fixture
def cluster_on_its_own_redis(make_cluster_on_own_redis):
    """One worker slot on a Redis of its own, for the tests that stop or wipe that Redis."""
    return make_cluster_on_own_redis(concurrency=1)


def test_a_task_whose_redis_is_gone_for_good_fails_within_its_pool_ttl(cluster_on_its_own_redis):
    cluster = cluster_on_its_own_redis
    pool = distpool.Pool(1, pool_ttl=2, **cluster.pool_kwargs())
    lost = pool.apply_async(sleep_for, (60,))
    time.sleep(1.0)  # taken by the worker
    cluster.redis.stop()
    stopped = time.monotonic()
    with pytest.raises(distpool.BrokerUnavailableError, match="pool_ttl"):
        lost.get(timeout=60)
    assert time.monotonic() - stopped < 20
    pool.terminate()  # and stopping the pool does not hang on the missing Redis either
    pool.join()


def test_tasks_lost_with_redis_s_data_fail_instead_of_waiting_forever(cluster_on_its_own_redis):
    cluster = cluster_on_its_own_redis
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        running = pool.apply_async(sleep_for, (3,))
        queued = pool.apply_async(square, (4,))  # waits in the queue for the one slot
        time.sleep(1.0)
        cluster.redis.client.flushall()  # as a restart without persistence does
        wiped = time.monotonic()
        for result in (running, queued):
            with pytest.raises(distpool.BrokerUnavailableError, match="liveness key"):
                result.get(timeout=30)
        assert time.monotonic() - wiped < 10
        assert pool.apply(square, (5,)) == 25  # and the pool goes on
