"""distpool.Executor over the in-process transport: what ProcessPoolExecutor's callers rely on."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import threading
import time
from multiprocessing.pool import RemoteTraceback
from typing import Any

import pytest

import distpool


def fail(x: int) -> int:
    raise ValueError(f"bad {x}")


def test_max_workers_is_the_given_width_else_the_clusters_slots(manual: object) -> None:
    for max_workers, width in ((None, 3), (5, 5)):
        executor = distpool.Executor(max_workers)
        assert executor._max_workers == width and executor._pool._processes == width
        executor.shutdown(wait=False, cancel_futures=True)
        executor._pool.terminate()


def test_shutdown_lets_the_free_slots_take_their_tasks_then_cancels_the_rest(
        manual: object) -> None:
    executor = distpool.Executor(2)
    futures = [executor.submit(time.sleep, 0) for _ in range(10)]
    executor.shutdown(wait=False, cancel_futures=True)
    assert [f.running() for f in futures] == [True] * 2 + [False] * 8
    assert all(f.cancelled() for f in futures[2:])
    executor._pool.terminate()


def test_a_task_exception_has_process_pool_executors_cause_and_pool_keeps_its_own() -> None:
    with distpool.Executor(1, eager=True) as executor:
        cause = executor.submit(fail, 1).exception(timeout=5).__cause__
    assert type(cause) is concurrent.futures.process._RemoteTraceback
    assert "bad 1" in cause.tb
    with distpool.Pool(1, eager=True) as pool, pytest.raises(ValueError) as info:
        pool.apply(fail, (2,))
    assert type(info.value.__cause__) is RemoteTraceback


def test_shutdown_does_not_wait_for_a_dispatcher_that_cannot_send(
        manual: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("distpool.client.executor.START_WAIT", 0.3)
    publishing, release = threading.Event(), threading.Event()
    publish = manual.publish

    def stuck(messages: Any) -> None:  # a broker that does not answer
        publishing.set()
        release.wait(10)
        publish(messages)

    manual.publish = stuck
    executor = distpool.Executor(2)
    first = executor.submit(time.sleep, 0)
    assert publishing.wait(5)  # the dispatcher is held in its publish
    later = [executor.submit(time.sleep, 0) for _ in range(10)]
    started = time.monotonic()
    executor.shutdown(wait=False, cancel_futures=True)
    assert time.monotonic() - started < 3
    assert first.running() and all(future.cancelled() for future in later)
    release.set()
    executor._pool.terminate()
