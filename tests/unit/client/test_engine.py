"""The engine's threads against hostile records, slow callbacks and failing inputs.

``Store`` is the eager transport's store with a result list anyone can push onto, as anyone
who can reach Redis can, and a liveness key that lapses, as Redis's does, when it is not
refreshed within ``pool_ttl``.
"""

from __future__ import annotations

import threading
import time

import pytest

import distpool
from distpool import transports
from distpool.client import engine
from distpool.client.pool import Calls, Function
from distpool.client.results import ApplyResult, MapResult
from distpool.client.shipping import Serialised
from distpool.errors import AuthenticationError
from distpool.transports import Transport
from distpool.transports.eager import EagerPublisher, MemoryStore
from distpool.wire import serialization
from distpool.wire.envelope import ResultRecord
from distpool.wire.signing import Signer
from tests.hostile import HOSTILE_RECORDS


def square(x):
    return x * x


def nap(seconds):
    time.sleep(seconds)
    return seconds


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class Store(MemoryStore):
    def __init__(self):
        super().__init__()
        self.ttl = 60.0
        self._refreshed = None

    def push(self, pool_id, raw):
        self.push_results(pool_id, [raw])

    def refresh_pool(self, pool_id, ttl, info, keep=None):
        now = time.monotonic()
        live = self._refreshed is not None and now - self._refreshed < self.ttl
        self._refreshed = now
        return live


@pytest.fixture
def store(monkeypatch):
    store = Store()
    signer = Signer(b"the unit tests' key")
    monkeypatch.setattr(transports, "connect", lambda settings: Transport(
        EagerPublisher(store, signer), store, signer))
    return store


def test_nothing_pushed_onto_the_result_list_stops_the_pool(store):
    with distpool.Pool(2, eager=True) as pool:
        slow = pool.apply_async(nap, (0.5,))  # in flight meanwhile: a forgery names it
        task_id = pool._tasks.wire_id(slow._job, 0)
        wait_until(lambda: task_id in pool._engine._flight.task_ids())
        forged = ResultRecord(task_id, True, serialization.dumps(666)).to_bytes(
            Signer(b"not the key"), pool._pool_id)
        for raw in [*HOSTILE_RECORDS.values(), forged]:
            store.push(pool._pool_id, raw)
        assert pool.apply_async(square, (3,)).get(timeout=5) == 9
        assert pool.map_async(square, range(10), chunksize=3).get(timeout=5) == [
            x * x for x in range(10)]
        with pytest.raises(AuthenticationError):  # fails the task it names, and only it
            slow.get(timeout=5)
        assert pool._engine._collector.is_alive()


def test_an_error_while_handling_a_record_drops_the_record_not_the_collector(store,
                                                                             monkeypatch):
    from_bytes = ResultRecord.from_bytes

    def buggy(raw, signer, pool_id):
        if raw == b"unforeseen\n":
            raise RuntimeError("a bug in a decoder")
        return from_bytes(raw, signer, pool_id)

    monkeypatch.setattr(ResultRecord, "from_bytes", buggy)
    with distpool.Pool(2, eager=True) as pool:
        store.push(pool._pool_id, b"unforeseen\n")
        assert pool.apply_async(square, (3,)).get(timeout=5) == 9
        assert pool._engine._collector.is_alive()


def test_a_slow_callback_neither_delays_the_liveness_refresh_nor_fails_tasks_in_flight(
        store, monkeypatch):
    # The key lapses 0.3 s after the last refresh; the pool refreshes every 0.1 s.
    monkeypatch.setattr(engine, "COLLECT_TIMEOUT", 0.05)
    store.ttl = 0.3
    with distpool.Pool(2, eager=True, pool_ttl=0.3) as pool:
        started = threading.Event()

        def slow_callback(value):
            started.set()
            time.sleep(1.0)  # more than three times pool_ttl

        slow = pool.apply_async(square, (2,), callback=slow_callback)
        assert started.wait(5)
        in_flight = pool.apply_async(nap, (1.2,))  # sent while the callback runs
        assert in_flight.get(timeout=10) == 1.2
        assert slow.get(timeout=10) == 4


def test_callbacks_run_one_at_a_time_in_completion_order_off_the_collector(store):
    seen = []
    with distpool.Pool(2, eager=True) as pool:
        results = [pool.apply_async(square, (i,), callback=lambda v: seen.append(
            (v, threading.current_thread()))) for i in range(20)]
        for result in results:
            result.get(timeout=5)
        assert [value for value, _ in seen] == [i * i for i in range(20)]
        assert {thread for _, thread in seen} == {pool._engine._delivery.thread}


@pytest.mark.parametrize("stop", ["close", "terminate"])
def test_the_engines_threads_end_with_the_pool(store, stop):
    pool = distpool.Pool(2, eager=True)
    pool.apply_async(square, (2,), callback=lambda value: None).get(timeout=5)
    threads = [pool._engine._dispatcher, pool._engine._collector,
               pool._engine._delivery.thread]
    getattr(pool, stop)()
    pool.join()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()


def test_a_job_whose_input_raises_fails_with_that_error_and_the_pool_goes_on(store):
    with distpool.Pool(2, eager=True) as pool:
        def refuse():
            raise KeyError("cannot prepare the task")

        refused = Calls(pool).submit(Function(square), (2,), {}, None, None, start=refuse,
                                     result_type=ApplyResult)
        with pytest.raises(KeyError, match="cannot prepare"):
            refused.get(timeout=5)

        job = pool._engine.new_job()
        result = MapResult(job, pool._engine.job_done, length=4, chunksize=1)
        function = Function(square).serialised(pool._serialise)

        def failing_input():
            for index in range(2):
                yield pool._tasks.task(job, index, "map", function,
                                       Serialised(serialization.dumps((index,))))
            raise KeyError("the input broke")

        pool._engine.submit(job, result, failing_input())
        with pytest.raises(KeyError, match="the input broke"):
            result.get(timeout=5)
        assert result.progress.completed == 4  # the chunks sent reported first
        assert pool.apply_async(square, (3,)).get(timeout=5) == 9
