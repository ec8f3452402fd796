"""Result objects on their own: delivery order, readiness, callbacks, timeouts."""

from __future__ import annotations

import threading

import pytest

from distpool.errors import PoolTerminatedError, TimeoutError
from distpool.results import ApplyResult, IMapIterator, IMapUnorderedIterator, MapResult


class Done:
    def __init__(self):
        self.jobs = []

    def __call__(self, job):
        self.jobs.append(job)


def test_apply_result_success_and_failure():
    done = Done()
    ok = ApplyResult(1, done)
    ok._set(0, True, 42)
    assert ok.ready() and ok.successful() and ok.get() == 42 and done.jobs == [1]
    bad = ApplyResult(2, done)
    bad._set(0, False, KeyError("k"))
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
    result._set(0, True, 5)
    waiter.join(5)
    assert order == [("callback", 5), "woken"]

    def broken(_):
        raise RuntimeError("callback bug")

    result = ApplyResult(2, Done(), callback=broken)
    with pytest.raises(RuntimeError):
        result._set(0, True, 1)
    assert result.ready() and result.get() == 1


def test_map_result_fills_chunks_in_order():
    done = Done()
    calls = []
    result = MapResult(7, done, length=5, chunksize=2, callback=calls.append)
    result._set(2, True, [4])
    result._set(0, True, [0, 1])
    assert not result.ready()
    result._set(1, True, [2, 3])
    assert result.get() == [0, 1, 2, 3, 4] and calls == [[0, 1, 2, 3, 4]] and done.jobs == [7]


def test_map_result_keeps_first_error_and_waits_for_every_chunk():
    errors = []
    result = MapResult(1, Done(), length=3, chunksize=1, error_callback=errors.append)
    first, second = ValueError("first"), ValueError("second")
    result._set(1, False, first)
    assert not result.ready()
    result._set(0, False, second)
    result._set(2, True, [2])
    assert result.ready() and errors == [first]
    with pytest.raises(ValueError, match="first"):
        result.get()


def test_empty_map_is_ready_at_once():
    done = Done()
    assert MapResult(3, done, length=0, chunksize=0).get() == [] and done.jobs == [3]


def test_imap_orders_chunks_and_raises_failures_in_place():
    done = Done()
    it = IMapIterator(1, done)
    it._set(1, False, KeyError("chunk 1"))
    it._set(2, True, [4, 5])
    with pytest.raises(TimeoutError):
        it.next(timeout=0.01)
    it._set(0, True, [0, 1])
    it._set_length(3, 5)
    assert [it.next(), it.next()] == [0, 1]
    with pytest.raises(KeyError):
        next(it)
    assert list(it) == [4, 5] and done.jobs == [1]


def test_imap_unordered_yields_in_arrival_order():
    it = IMapUnorderedIterator(1, Done())
    it._set(2, True, ["c"])
    it._set(0, True, ["a"])
    it._set_length(3, 5)
    assert [next(it), next(it)] == ["c", "a"]
    it._set(1, True, ["b"])
    assert list(it) == ["b"]


def test_abort_fails_what_is_outstanding():
    errors = []
    result = MapResult(1, Done(), length=4, chunksize=2, error_callback=errors.append)
    result._set(0, True, [0, 1])
    result._abort(PoolTerminatedError("terminated"))
    with pytest.raises(PoolTerminatedError):
        result.get(timeout=1)
    assert len(errors) == 1
    it = IMapIterator(2, Done())
    it._set(0, True, ["kept"])
    it._abort(PoolTerminatedError("terminated"))
    assert next(it) == "kept"
    with pytest.raises(PoolTerminatedError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
