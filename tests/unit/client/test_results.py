"""Result objects on their own: delivery order, readiness, callbacks, timeouts."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from distpool.client.results import ApplyResult, IMapIterator, IMapUnorderedIterator, MapResult
from distpool.errors import PoolTerminatedError, TimeoutError


class Done:
    def __init__(self):
        self.jobs = []

    def __call__(self, job):
        self.jobs.append(job)


def test_apply_result_success_and_failure():
    done = Done()
    ok = ApplyResult(1, done)
    ok.set_outcome(0, True, 42)
    assert ok.ready() and ok.successful() and ok.get() == 42 and done.jobs == [1]
    bad = ApplyResult(2, done)
    bad.set_outcome(0, False, KeyError("k"))
    assert not bad.successful()
    with pytest.raises(KeyError):
        bad.get()


def test_get_times_out_and_successful_needs_readiness():
    result = ApplyResult(1, Done())
    with pytest.raises(TimeoutError):
        result.get(timeout=0.01)
    with pytest.raises(ValueError, match="not ready"):
        result.successful()


def test_callback_runs_before_waiters_and_a_raising_callback_still_wakes_them():
    order = []
    result = ApplyResult(1, Done(), callback=lambda v: order.append(("callback", v)))
    waiter = threading.Thread(target=lambda: (result.wait(), order.append("woken")))
    waiter.start()
    result.set_outcome(0, True, 5)
    waiter.join(5)
    assert order == [("callback", 5), "woken"]

    def broken(_):
        raise RuntimeError("callback bug")

    result = ApplyResult(2, Done(), callback=broken)
    with pytest.raises(RuntimeError):
        result.set_outcome(0, True, 1)
    assert result.ready() and result.get() == 1


def test_map_result_fills_chunks_in_order():
    done = Done()
    calls = []
    result = MapResult(7, done, length=5, chunksize=2, callback=calls.append)
    result.set_outcome(2, True, [4])
    result.set_outcome(0, True, [0, 1])
    assert not result.ready()
    result.set_outcome(1, True, [2, 3])
    assert result.get() == [0, 1, 2, 3, 4] and calls == [[0, 1, 2, 3, 4]] and done.jobs == [7]


def test_map_result_keeps_first_error_and_waits_for_every_chunk():
    errors = []
    result = MapResult(1, Done(), length=3, chunksize=1, error_callback=errors.append)
    first, second = ValueError("first"), ValueError("second")
    result.set_outcome(1, False, first)
    assert not result.ready()
    result.set_outcome(0, False, second)
    result.set_outcome(2, True, [2])
    assert result.ready() and errors == [first]
    with pytest.raises(ValueError, match="first"):
        result.get()


def test_empty_map_is_ready_at_once():
    done = Done()
    assert MapResult(3, done, length=0, chunksize=0).get() == [] and done.jobs == [3]


def test_imap_orders_chunks_and_raises_failures_in_place():
    done = Done()
    it = IMapIterator(1, done)
    it.set_outcome(1, False, KeyError("chunk 1"))
    it.set_outcome(2, True, [4, 5])
    with pytest.raises(TimeoutError):
        it.next(timeout=0.01)
    it.set_outcome(0, True, [0, 1])
    it.input_ended(3, 5)
    assert [it.next(), it.next()] == [0, 1]
    with pytest.raises(KeyError):
        next(it)
    assert list(it) == [4, 5] and done.jobs == [1]


@pytest.mark.parametrize("kind", [IMapIterator, IMapUnorderedIterator])
def test_a_failed_chunk_ends_the_iteration_and_the_rest_counts_as_consumed(
        kind: type[IMapIterator[str]]) -> None:
    done, wakes = Done(), []
    it = kind(1, done, lambda: wakes.append(it.chunks_consumed), chunksize=2)
    it.set_outcome(0, True, ["a", "b"])
    it.set_outcome(1, False, KeyError("chunk 1"))
    it.set_outcome(3, True, ["g", "h"])
    assert [next(it), next(it)] == ["a", "b"]
    with pytest.raises(KeyError):
        next(it)
    with pytest.raises(StopIteration):
        it.next(timeout=0.01)
    # Nobody can take what comes next: the engine may send more input at once.
    assert it.chunks_consumed == (2 if kind is IMapIterator else 3)
    it.set_outcome(2, True, ["e", "f"])
    it.input_ended(4, 8)
    assert it.chunks_consumed == 4 and wakes[-1] == 4 and done.jobs == [1]
    with pytest.raises(StopIteration):
        next(it)
    assert it.progress.completed == 8


def test_imap_unordered_yields_in_arrival_order():
    it = IMapUnorderedIterator(1, Done())
    it.set_outcome(2, True, ["c"])
    it.set_outcome(0, True, ["a"])
    it.input_ended(3, 5)
    assert [next(it), next(it)] == ["c", "a"]
    it.set_outcome(1, True, ["b"])
    assert list(it) == ["b"]


def test_abort_fails_what_is_outstanding():
    errors = []
    result = MapResult(1, Done(), length=4, chunksize=2, error_callback=errors.append)
    result.set_outcome(0, True, [0, 1])
    result.abort(PoolTerminatedError("terminated"))
    with pytest.raises(PoolTerminatedError):
        result.get(timeout=1)
    assert len(errors) == 1
    it = IMapIterator(2, Done())
    it.set_outcome(0, True, ["kept"])
    it.abort(PoolTerminatedError("terminated"))
    assert next(it) == "kept"
    with pytest.raises(PoolTerminatedError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


# -- deliveries from several threads (the delivery thread, the dispatcher, terminate) --------


class YieldingDisplay:
    """A progress display that lets other threads run while it draws, as tqdm may."""

    def __init__(self):
        self.closed = 0

    def update(self, n):
        time.sleep(0.0005)

    def set_total(self, total):
        pass

    def close(self):
        self.closed += 1


def deliver_concurrently(deliveries, threads=8):
    """Run the callables on ``threads`` threads at once, released together."""
    start = threading.Barrier(threads)

    def run(part):
        start.wait()
        for deliver in part:
            deliver()

    workers = [threading.Thread(target=run, args=(deliveries[i::threads],))
               for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert not worker.is_alive()


def test_a_map_fed_from_many_threads_completes_once():
    for attempt in range(5):
        done, calls, display = Done(), [], YieldingDisplay()
        result = MapResult(attempt, done, length=64, chunksize=1, callback=calls.append,
                           display=display)
        deliver_concurrently([lambda i=i: result.set_outcome(i, True, [i]) for i in range(64)])
        assert result.get(timeout=1) == list(range(64))
        assert len(calls) == 1 and done.jobs == [attempt] and display.closed == 1
        assert result.progress.completed == 64


def test_an_abort_racing_a_delivery_runs_one_callback_and_keeps_the_result():
    entered, release = threading.Event(), threading.Event()
    seen = []

    def slow_callback(value):
        seen.append(("callback", value))
        entered.set()
        release.wait(5)

    result = ApplyResult(1, Done(), callback=slow_callback, error_callback=seen.append)
    delivery = threading.Thread(target=result.set_outcome, args=(0, True, 42))
    delivery.start()
    assert entered.wait(5)
    result.abort(PoolTerminatedError("terminated"))  # the pool is terminated meanwhile
    release.set()
    delivery.join(5)
    assert result.get(timeout=1) == 42 and seen == [("callback", 42)]


def test_an_abort_after_an_iterator_completed_changes_nothing():
    done = Done()
    it = IMapIterator(1, done)
    it.set_outcome(0, True, ["a", "b"])
    it.input_ended(1, 2)
    it.abort(PoolTerminatedError("terminated"))  # terminate raced the last delivery
    assert list(it) == ["a", "b"] and done.jobs == [1]


def test_a_delivery_after_an_abort_is_dropped():
    it = IMapIterator(1, Done())
    it.set_outcome(0, True, ["kept"])
    it.abort(PoolTerminatedError("terminated"))
    it.set_outcome(1, True, ["late"])
    assert next(it) == "kept"
    with pytest.raises(PoolTerminatedError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


# -- a job whose input fails while it is being sent ------------------------------------------


def test_a_map_whose_input_fails_waits_for_the_chunks_sent_then_fails_with_the_error():
    errors = []
    result = MapResult(1, Done(), length=10, chunksize=2, error_callback=errors.append)
    result.set_outcome(0, True, [0, 1])
    result.input_failed(2, KeyError("input"))  # chunks 2..4 will never come
    assert not result.ready()  # chunk 1 was sent: it reports first, as in multiprocessing
    result.set_outcome(1, True, [2, 3])
    with pytest.raises(KeyError):
        result.get(timeout=1)
    assert len(errors) == 1 and result.progress.completed == 10


def test_an_apply_whose_task_could_not_be_prepared_fails_with_the_error():
    errors = []
    result = ApplyResult(1, Done(), error_callback=errors.append)
    result.input_failed(0, KeyError("input"))
    with pytest.raises(KeyError):
        result.get(timeout=1)
    assert len(errors) == 1


@pytest.mark.parametrize("kind", [IMapIterator, IMapUnorderedIterator])
def test_an_imap_whose_input_fails_raises_the_error_in_place_of_the_next_chunk(kind):
    done = Done()
    it = kind(1, done)
    it.input_failed(2, KeyError("input"))  # after two chunks were sent
    it.set_outcome(1, True, ["b"])
    it.set_outcome(0, True, ["a"])
    outcomes = []
    while True:
        try:
            outcomes.append(it.next(timeout=1))
        except KeyError:
            outcomes.append("KeyError")
        except StopIteration:
            break
    if kind is IMapUnorderedIterator:  # in arrival order: the error came first
        assert outcomes == ["KeyError", "b", "a"]
    else:
        assert outcomes == ["a", "b", "KeyError"]
    assert done.jobs == [1]


@pytest.mark.parametrize("windows", [False, True])
def test_waits_with_no_timeout_are_sliced_where_ctrl_c_could_not_end_them(monkeypatch, windows):
    # Windows before 3.14 ignores Ctrl-C in a lock's wait with no timeout (cpython#80116).
    from distpool import platform
    monkeypatch.setattr(platform, "windows", windows)
    sliced = platform.windows and sys.version_info < (3, 14)
    waits = []
    result, iterator = ApplyResult(1, Done()), IMapIterator(2, Done())
    real_wait = threading.Event.wait

    def wait(event, timeout=None):
        if event is result._event:
            waits.append(timeout)
        return real_wait(event, timeout)

    monkeypatch.setattr(threading.Event, "wait", wait)
    threading.Timer(0.6, result.set_outcome, (0, True, "done")).start()
    assert result.get() == "done"
    assert (all(t is not None and t <= platform.WAIT_SLICE for t in waits) and len(waits) > 1
            if sliced else waits == [None])
    threading.Timer(0.6, iterator.set_outcome, (0, True, ["item"])).start()
    assert next(iterator) == "item"  # (its condition's wait, sliced alike)
