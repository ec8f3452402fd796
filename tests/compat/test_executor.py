"""distpool.Executor and concurrent.futures.ProcessPoolExecutor, held to the same bodies."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import gc
import os
import time
import weakref
from typing import Any

import pytest

import distpool
from tests.compat import conftest as compat


def square(x):
    return x * x


def add(x, y):
    return x + y


def fail(x):
    raise ValueError(f"bad {x}")


class Dummy:
    """A result that can be weakly referenced (an int or a list cannot)."""


def make_dummy_object(_: object) -> Dummy:
    return Dummy()


def touch_after(path, seconds):
    time.sleep(seconds)
    with open(path, "w") as f:
        f.write("ran")
    return path


@pytest.fixture(params=["concurrent.futures", "distpool"])
def make_executor(request):
    executors = []

    def make(max_workers=2):
        if request.param == "distpool":
            assert compat.cluster is not None
            executor = distpool.Executor(max_workers, **compat.cluster.pool_kwargs())
        else:
            executor = concurrent.futures.ProcessPoolExecutor(max_workers)
        executors.append(executor)
        return executor

    # max_workers=None: the CPU count, or the slots of the workers on the queue.
    make.default_width = os.cpu_count() if request.param == "concurrent.futures" else sum(
        worker.concurrency for worker in compat.cluster.workers)
    yield make
    for executor in executors:
        executor.shutdown(wait=True, cancel_futures=True)


def test_submit_result_and_exception(make_executor):
    executor = make_executor()
    assert executor.submit(add, 2, y=3).result(timeout=30) == 5
    future = executor.submit(fail, 7)
    with pytest.raises(ValueError, match="bad 7"):
        future.result(timeout=30)
    assert isinstance(future.exception(), ValueError)


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_in_order_with_chunksize(make_executor, chunksize):
    executor = make_executor()
    assert list(executor.map(add, range(10), range(10), chunksize=chunksize)) == [
        2 * x for x in range(10)]


def test_as_completed_and_wait(make_executor):
    executor = make_executor()
    futures = [executor.submit(square, x) for x in range(6)]
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=30)) == [
        x * x for x in range(6)]
    done, not_done = concurrent.futures.wait(futures, timeout=30)
    assert len(done) == 6 and not not_done


def test_cancel_stops_a_task_that_has_not_started(make_executor, tmp_path):
    executor = make_executor(1)
    busy = executor.submit(time.sleep, 2.0)
    # ProcessPoolExecutor moves calls into its call queue ahead of time, as far as its size
    # (max_workers + 1), where they can no longer be cancelled: two more fill it until the
    # busy call ends, whenever its manager thread gets to run.
    for _ in range(2):
        executor.submit(time.sleep, 0)
    marker = tmp_path / "cancelled-task-ran"
    waiting = executor.submit(touch_after, str(marker), 0)
    assert waiting.cancel() and waiting.cancelled()
    busy.result(timeout=30)
    executor.submit(square, 1).result(timeout=30)  # everything before it has run
    assert not marker.exists()


def test_shutdown_cancels_pending_futures_and_refuses_new_ones(make_executor, tmp_path):
    executor = make_executor(1)
    executor.submit(time.sleep, 0.5)
    pending = [executor.submit(touch_after, str(tmp_path / f"t{i}"), 0) for i in range(5)]
    executor.shutdown(wait=True, cancel_futures=True)
    # ProcessPoolExecutor moves one call beyond its workers into its call queue ahead of
    # time (EXTRA_QUEUED_CALLS), where it can no longer be cancelled; distpool hands a task
    # over only when a worker is free.
    queued_ahead = 1 if isinstance(executor, concurrent.futures.ProcessPoolExecutor) else 0
    assert all(f.cancelled() for f in pending[1 + queued_ahead:])
    assert len(list(tmp_path.iterdir())) <= 1 + queued_ahead
    with pytest.raises(RuntimeError):
        executor.submit(square, 2)


def test_tasks_run_in_other_processes(make_executor):
    executor = make_executor()
    assert executor.submit(os.getpid).result(timeout=30) != os.getpid()


def test_shutdown_cancels_a_burst_once_work_has_started(make_executor: Any) -> None:
    # CPython's ExecutorShutdownTest.test_cancel_futures: some of the burst is running by
    # the time shutdown cancels the rest.
    executor = make_executor(2)
    futures = [executor.submit(time.sleep, 0.1) for _ in range(50)]
    executor.shutdown(cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    others = [f for f in futures if not f.cancelled()]
    assert len(cancelled) > 20 and others
    assert all(f.done() and f.exception() is None for f in others)


def test_exception_cause_is_the_process_pool_remote_traceback(make_executor: Any) -> None:
    # CPython's ProcessPoolExecutorTest.test_traceback
    future = make_executor().submit(fail, 7)
    cause = future.exception(timeout=30).__cause__
    assert type(cause) is concurrent.futures.process._RemoteTraceback
    assert 'raise ValueError(f"bad {x}")' in cause.tb


def test_max_workers_is_the_executors_width(make_executor: Any) -> None:
    assert make_executor(3)._max_workers == 3
    assert make_executor(None)._max_workers == make_executor.default_width


@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_keeps_no_reference_to_a_result_it_has_handed_over(make_executor: Any,
                                                                chunksize: int) -> None:
    # CPython's ExecutorTest.test_free_reference (bpo-14406): a large result is freed once
    # the caller drops it, not when the next one arrives (nor, in chunks, the chunk's last).
    for obj in make_executor().map(make_dummy_object, range(10), chunksize=chunksize):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None
