"""One body per behaviour, run against multiprocessing.Pool and distpool.Pool alike.

Includes the bodies of CPython's _TestPoolWorkerErrors and _TestPoolWorkerLifetime, which
name ``multiprocessing.Pool`` directly and so cannot be pointed at distpool unchanged.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Iterator
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback
from typing import Any, Callable

import pytest

# -- task functions (importable: both pools refer to them by name) -----------------------


def square(x, wait=0.0):
    time.sleep(wait)
    return x * x


def mul(x, y):
    return x * y


def add(x, y=0, *, z=0):
    return x + y + z


class SimulationError(Exception):
    """A user-defined exception: it must come back as itself."""


def fail_on(x, bad):
    if x == bad:
        raise SimulationError(f"bad input {x}")
    return x


def raising():
    raise KeyError("key")


def unpicklable_result():
    # Neither pickle nor dill can serialise a generator.
    return (i for i in range(3))


_state = {"case": None}


def open_case(name):
    _state["case"] = name


def read_case(_):
    return _state["case"]


def sleep_then_return(x):
    time.sleep(x)
    return x


class Counted:
    """Instances carry state, proving arguments and results are copies."""

    def __init__(self, value):
        self.value = value

    def bump(self):
        self.value += 1
        return self


def bump(obj):
    return obj.bump()


def generator_failing_at(total, when):
    for i in range(total):
        if i == when:
            raise SimulationError("input failed")
        yield i


# -- the contract -------------------------------------------------------------------------


def test_apply_passes_args_and_kwargs(make_pool):
    pool = make_pool(2)
    assert pool.apply(add, (1, 2), {"z": 3}) == 6
    assert pool.apply(add, (), {"x": 4}) == 4
    assert pool.apply_async(square, (7,)).get(timeout=30) == 49


@pytest.mark.parametrize("chunksize", [None, 1, 3, 1000])
def test_map_keeps_input_order(make_pool, chunksize):
    pool = make_pool(3)
    data = list(range(50))
    assert pool.map(square, data, chunksize) == [x * x for x in data]
    assert pool.map_async(square, iter(data), chunksize).get(timeout=30) == [x * x for x in data]


def test_starmap_unpacks_items(make_pool):
    pool = make_pool(2)
    pairs = list(zip(range(20), range(20, 0, -1)))
    assert pool.starmap(mul, pairs) == [x * y for x, y in pairs]
    assert pool.starmap_async(mul, pairs, 3).get(timeout=30) == [x * y for x, y in pairs]


def test_imap_and_imap_unordered(make_pool):
    pool = make_pool(2)
    assert list(pool.imap(square, range(30))) == [x * x for x in range(30)]
    assert list(pool.imap(square, range(30), chunksize=4)) == [x * x for x in range(30)]
    assert sorted(pool.imap_unordered(square, range(30), chunksize=7)) == [
        x * x for x in range(30)]


def test_imap_unordered_yields_in_completion_order(make_pool):
    pool = make_pool(2)
    assert list(pool.imap_unordered(sleep_then_return, [1.0, 0.0])) == [0.0, 1.0]


def test_imap_next_with_timeout(make_pool):
    pool = make_pool(1)
    it = pool.imap(sleep_then_return, [1.0])
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)
    assert it.next(timeout=30) == 1.0
    with pytest.raises(StopIteration):
        it.next(timeout=30)


def test_get_timeout_raises_multiprocessing_timeout_error(make_pool):
    pool = make_pool(1)
    result = pool.apply_async(sleep_then_return, (1.0,))
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.05)
    assert not result.ready()
    with pytest.raises(ValueError):
        result.successful()
    result.wait()
    assert result.ready() and result.successful() and result.get() == 1.0


def test_empty_inputs(make_pool):
    pool = make_pool(1)
    assert pool.map(square, []) == []
    assert pool.starmap(mul, []) == []
    assert list(pool.imap(square, [])) == []
    assert list(pool.imap_unordered(square, [])) == []
    assert pool.map_async(square, [], chunksize=1).get(timeout=30) == []


def test_worker_exception_is_reraised_with_remote_traceback(make_pool):
    pool = make_pool(2)
    with pytest.raises(SimulationError) as info:
        pool.apply(fail_on, (3, 3))
    assert info.value.args == ("bad input 3",)
    cause = info.value.__cause__
    assert type(cause) is RemoteTraceback
    assert "in fail_on" in cause.tb and 'raise SimulationError(f"bad input {x}")' in cause.tb


def test_map_fails_with_first_error_after_all_chunks(make_pool):
    pool = make_pool(2)
    with pytest.raises(SimulationError, match="bad input 2"):
        pool.starmap(fail_on, [(0, 9), (1, 9), (2, 2), (3, 9)], chunksize=1)
    start = time.monotonic()
    result = pool.starmap_async(sleep_then_return_or_fail, [(0.0, True), (1.0, False)], 1)
    result.wait(timeout=30)
    assert time.monotonic() - start >= 0.9  # waited for the slow chunk, as CPython does
    assert not result.successful()
    with pytest.raises(SimulationError, match="failed fast"):
        result.get()


def sleep_then_return_or_fail(wait, fail):
    time.sleep(wait)
    if fail:
        raise SimulationError("failed fast")
    return wait


def test_callbacks_run_before_waiters_wake(make_pool):
    pool = make_pool(2)
    calls = []
    pool.map_async(int, ["1"], callback=calls.append, error_callback=calls.append).wait()
    assert calls == [[1]]
    pool.map_async(int, ["a"], callback=calls.append, error_callback=calls.append).wait()
    assert len(calls) == 2 and isinstance(calls[1], ValueError)
    pool.apply_async(square, (3,), callback=calls.append).wait()
    assert calls[2] == 9


def test_async_error_callback(make_pool):
    # CPython's _TestPoolWorkerErrors.test_async_error_callback
    p = make_pool(2)
    scratchpad = [None]

    def errback(exc):
        scratchpad[0] = exc

    res = p.apply_async(raising, error_callback=errback)
    with pytest.raises(KeyError):
        res.get()
    assert isinstance(scratchpad[0], KeyError)
    p.close()
    p.join()


def test_unpicklable_result_is_reported_as_that_tasks_error(make_pool):
    # CPython's _TestPoolWorkerErrors.test_unpickleable_result, with a result neither
    # pickle nor dill can serialise (dill can serialise CPython's lambda).
    p = make_pool(2)
    for _ in range(5):
        scratchpad = [None]

        def errback(exc):
            scratchpad[0] = exc

        res = p.apply_async(unpicklable_result, error_callback=errback)
        with pytest.raises(MaybeEncodingError):
            res.get()
        wrapped = scratchpad[0]
        assert isinstance(wrapped, MaybeEncodingError)
        assert wrapped.exc is not None and wrapped.value is not None
    assert p.apply(square, (4,)) == 16  # the pool's workers are still serving
    p.close()
    p.join()


def test_unpicklable_argument_raises_at_the_call(make_pool):
    pool = make_pool(2)
    with pytest.raises(TypeError):
        pool.map(square, [1, (i for i in range(2)), 3])
    with pytest.raises(TypeError):
        pool.apply(square, ((i for i in range(2)),))
    assert pool.map(square, [1, 2]) == [1, 4]


def test_input_iterable_exception_propagates(make_pool):
    pool = make_pool(2)
    with pytest.raises(SimulationError):
        pool.map(square, generator_failing_at(10, 3))
    it = pool.imap(square, generator_failing_at(10, 3))
    assert [next(it) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(SimulationError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def outcomes(iterator: Iterator[int]) -> list[int | str]:
    """What ``iterator`` yields until it stops, ``"error"`` for each SimulationError."""
    seen: list[int | str] = []
    while True:
        try:
            seen.append(next(iterator))
        except SimulationError:
            seen.append("error")
        except StopIteration:
            return seen


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [1, 3])
def test_imap_after_a_failure(make_pool: Callable[..., Any], method: str, chunksize: int) -> None:
    # With chunksize > 1, multiprocessing's imap is a generator over the chunks' results:
    # the failed chunk raises once, and that ends it. One by one, each failure is raised
    # in place and iteration goes on.
    pool = make_pool(2)
    iterator = getattr(pool, method)(functools.partial(fail_on, bad=4), range(12), chunksize)
    seen = outcomes(iterator)
    if chunksize == 1:
        expected: list[int | str] = [0, 1, 2, 3, "error", *range(5, 12)]
        assert (seen if method == "imap" else sorted(seen, key=str)) == (
            expected if method == "imap" else sorted(expected, key=str))
    elif method == "imap":
        assert seen == [0, 1, 2, "error"]
    else:  # the whole chunks that came before it, never the failed chunk's items
        assert seen[-1] == "error"
        chunks = {item // 3 for item in seen[:-1] if isinstance(item, int)}
        assert 1 not in chunks and sorted(seen[:-1], key=str) == sorted(
            (x for chunk in chunks for x in range(3 * chunk, 3 * chunk + 3)), key=str)
    with pytest.raises(StopIteration):
        next(iterator)
    pool.close()
    pool.join()  # the rest of the input ran all the same


def test_initializer_state_is_visible_to_tasks(make_pool):
    pool = make_pool(2, initializer=open_case, initargs=("grid.sav",))
    assert pool.map(read_case, range(8), chunksize=1) == ["grid.sav"] * 8


def test_arguments_and_results_are_copies(make_pool):
    pool = make_pool(2)
    originals = [Counted(i) for i in range(4)]
    results = pool.map(bump, originals)
    assert [o.value for o in originals] == [0, 1, 2, 3]
    assert [type(r) for r in results] == [Counted] * 4
    assert [r.value for r in results] == [1, 2, 3, 4]


def test_pool_worker_lifetime_early_close(make_pool):
    # CPython's _TestPoolWorkerLifetime.test_pool_worker_lifetime_early_close
    p = make_pool(3, maxtasksperchild=1)
    results = [p.apply_async(square, (i, 0.3)) for i in range(6)]
    p.close()
    p.join()
    for j, res in enumerate(results):
        assert res.get() == j * j


@pytest.mark.parametrize("kwargs, error", [
    ({"processes": 0}, ValueError),
    ({"processes": -1}, ValueError),
    ({"maxtasksperchild": 0}, ValueError),
    ({"maxtasksperchild": -1}, ValueError),
    ({"maxtasksperchild": 0.5}, ValueError),
    ({"maxtasksperchild": "12"}, ValueError),
    ({"initializer": 42}, TypeError),
])
def test_constructor_validation(make_pool, kwargs, error):
    with pytest.raises(error):
        make_pool(**kwargs)


def test_methods_after_close_or_terminate_raise(make_pool):
    for stop in ("close", "terminate"):
        pool = make_pool(1)
        getattr(pool, stop)()
        for call in (lambda: pool.apply(square, (1,)),
                     lambda: pool.apply_async(square, (1,)),
                     lambda: pool.map(square, [1]),
                     lambda: pool.map_async(square, [1]),
                     lambda: pool.starmap(mul, [(1, 2)]),
                     lambda: pool.imap(square, [1]),
                     lambda: pool.imap_unordered(square, [1])):
            with pytest.raises(ValueError, match="Pool not running"):
                call()
        pool.join()


def test_join_while_running_raises(make_pool):
    pool = make_pool(1)
    with pytest.raises(ValueError, match="Pool is still running"):
        pool.join()


def test_close_then_join_waits_for_submitted_work(make_pool):
    pool = make_pool(2)
    results = [pool.apply_async(sleep_then_return, (0.2,)) for _ in range(4)]
    pool.close()
    pool.join()
    assert all(r.ready() for r in results)
    assert [r.get() for r in results] == [0.2] * 4


def test_context_manager_terminates(make_pool):
    with make_pool(2) as pool:
        assert pool.map(square, [1, 2]) == [1, 4]
    with pytest.raises(ValueError):
        pool.apply(square, (1,))
    with pytest.raises(ValueError), pool:
        pass
    pool.join()


def test_pool_cannot_be_pickled(make_pool):
    pool = make_pool(1)
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)


def test_callbacks_run_on_a_pool_thread(make_pool):
    pool = make_pool(1)
    seen = []
    pool.apply_async(square, (2,),
                     callback=lambda _: seen.append(threading.current_thread())).wait()
    assert seen and seen[0] is not threading.main_thread()


def test_tasks_run_in_other_processes(make_pool):
    pool = make_pool(2)
    assert os.getpid() not in pool.map(getpid, range(4))


def getpid(_):
    return os.getpid()
