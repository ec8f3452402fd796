"""The Pool facade and its engine over the in-process transport: no broker, no processes.

``ManualPublisher`` holds published tasks until the test runs them, which makes the engine's
guarantees observable: what is sent when, and how much is in flight.
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
import warnings
import weakref

import pytest

import distpool
import distpool.client.pool
import distpool.client.shipping
from distpool import transports
from distpool.errors import PoolTerminatedError
from distpool.worker import execute as worker


def square(x):
    return x * x


def test_default_processes_is_the_clusters_slot_count(manual):
    with distpool.Pool() as pool:
        assert pool._processes == 3


def test_map_default_chunksize_matches_multiprocessing(manual):
    with distpool.Pool(4) as pool:
        result = pool.map_async(square, range(100))
        # multiprocessing: ceil(100 / (4 * 4)) = 7 items per chunk -> 15 chunks
        manual.run_until_ready(result)
        assert result.get() == [x * x for x in range(100)]
    assert len(manual.published) == 15


def test_in_flight_tasks_never_exceed_processes(manual):
    with distpool.Pool(2) as pool:
        result = pool.map_async(square, range(10), chunksize=1)
        manual.run_until_ready(result)
        assert result.get(timeout=5) == [x * x for x in range(10)]
    assert manual.max_in_flight == 2


def test_imap_reads_its_input_lazily(manual):
    pulled = []

    def endless():
        for i in itertools.count():
            pulled.append(i)
            yield i

    with distpool.Pool(2) as pool:
        it = pool.imap(square, endless())
        manual.wait_published(2)
        time.sleep(0.2)
        assert len(pulled) <= 3  # two in flight, at most one more read ahead
        manual.run_one()
        assert next(it) == 0


def test_the_callable_is_serialised_once_per_call(manual, monkeypatch):
    calls = []
    real_dumps = distpool.client.shipping.serialization.dumps

    def counting_dumps(obj, **kwargs):
        if obj is square:
            calls.append(obj)
        return real_dumps(obj, **kwargs)

    monkeypatch.setattr(distpool.client.shipping.serialization, "dumps", counting_dumps)
    with distpool.Pool(2) as pool:
        pool.map_async(square, range(40), chunksize=2)
        manual.wait_published(2)
    assert len(calls) == 1
    assert len({e.function for e in manual.published}) == 1


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")

    def __repr__(self):
        return "<the culprit>"


def test_unserialisable_item_fails_the_map_naming_it_and_nothing_after_it_is_sent(manual):
    # As multiprocessing: its task handler pickles chunks as it sends them, and the map
    # fails with the error once the chunks sent have reported.
    with distpool.Pool(2) as pool:
        result = pool.map_async(square, [1, 2, Unpicklable(), 4, 5, 6], chunksize=2)
        manual.run_until_ready(result)
        with pytest.raises(RuntimeError, match="cannot pickle") as info:
            result.get(timeout=5)
    assert any("item 2" in note and "<the culprit>" in note for note in info.value.__notes__)
    assert len(manual.published) == 1  # the chunk before it


def test_unserialisable_arguments_or_callable_fail_at_the_call_and_send_nothing(manual):
    with distpool.Pool(2) as pool:
        with pytest.raises(TypeError) as info:
            pool.apply_async(square, ((x for x in ()),))
        assert any("the arguments" in note for note in info.value.__notes__)
        with pytest.raises(RuntimeError, match="cannot pickle") as info:
            pool.map_async(Unpicklable(), [1, 2])
        assert any("the function" in note for note in info.value.__notes__)
    assert manual.published == []


def test_terminate_cancels_in_flight_and_fails_pending_results(manual):
    pool = distpool.Pool(2)
    result = pool.map_async(square, range(10), chunksize=1)
    single = pool.apply_async(square, (3,))
    manual.wait_published(2)
    pool.terminate()
    assert sorted(manual.cancelled) == sorted(m[0].task_id for m in manual.messages)
    with pytest.raises(PoolTerminatedError):
        result.get(timeout=5)
    with pytest.raises(PoolTerminatedError):
        single.get(timeout=5)
    pool.join()


def test_an_abandoned_pool_is_collected_and_terminated(manual):
    pool = distpool.Pool(1)
    engine = weakref.ref(pool._engine)
    threads = [pool._engine._dispatcher, pool._engine._collector]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del pool
        gc.collect()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    del engine


def test_unclosed_pool_warns_like_multiprocessing(manual):
    pool = distpool.Pool(1)
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del pool
        gc.collect()


def test_eager_pool_runs_the_worker_code_in_process(eager_pool, monkeypatch):
    executed = []
    real_execute = worker.execute
    monkeypatch.setattr(worker, "execute",
                        lambda env, fetch: executed.append(env) or real_execute(env, fetch))
    assert eager_pool.map(square, range(6), chunksize=2) == [0, 1, 4, 9, 16, 25]
    assert len(executed) == 3


def test_eager_pool_ships_lambdas_and_closures(eager_pool):
    offset = 10
    assert eager_pool.map(lambda x: x + offset, [1, 2]) == [11, 12]


def test_distpool_eager_fixture_makes_pools_eager(distpool_eager, monkeypatch):
    monkeypatch.setattr(transports, "connect", _refuse_non_eager)
    with distpool.Pool(2) as pool:
        assert pool.apply(square, (9,)) == 81


_connect = transports.connect


def _refuse_non_eager(settings):
    assert settings.eager, "the distpool_eager fixture did not make the pool eager"
    return _connect(settings)


def test_chunksize_must_be_positive(eager_pool):
    for call in (lambda: eager_pool.map(square, [1], chunksize=0),
                 lambda: eager_pool.imap(square, [1], chunksize=0),
                 lambda: eager_pool.imap_unordered(square, [1], chunksize=-1)):
        with pytest.raises(ValueError, match="Chunksize must be 1"):
            call()


def test_repr_names_state_and_hides_credentials():
    pool = distpool.Pool(1, eager=True, broker="redis://:hunter2@example:6379/0")
    try:
        assert "state=RUN" in repr(pool) and "hunter2" not in repr(pool)
    finally:
        pool.terminate()


def _run_everything_queued(manual, settle=0.2, until=lambda: True, timeout=10.0):
    """Run queued messages, as workers would, until ``until()`` holds (the state the test
    asserts next: waited for, not raced, on a loaded machine), and ``settle`` seconds more, in
    which anything sent beyond it would be sent too."""
    deadline = time.monotonic() + timeout
    settled = None
    while settled is None or time.monotonic() < settled:
        if settled is None and (until() or time.monotonic() >= deadline):
            settled = time.monotonic() + settle
        if manual.queued:
            manual.run_one()
        else:
            time.sleep(0.01)


def test_imap_sends_at_most_buffersize_chunks_ahead_of_its_consumer(manual):
    with distpool.Pool(2) as pool:
        it = pool.imap(square, itertools.count(), buffersize=3)
        _run_everything_queued(manual, until=lambda: len(manual.published) >= 3)
        assert len(manual.published) == 3  # nothing consumed yet: three chunks ahead
        assert [next(it), next(it)] == [0, 1]
        _run_everything_queued(manual, until=lambda: len(manual.published) >= 5)
        assert len(manual.published) == 5


def test_close_lifts_the_imap_buffer_so_join_finishes_without_a_consumer(manual):
    pool = distpool.Pool(2)
    it = pool.imap(square, range(10), buffersize=2)
    _run_everything_queued(manual, until=lambda: len(manual.published) >= 2)
    assert len(manual.published) == 2
    pool.close()
    joined = threading.Thread(target=pool.join)
    joined.start()
    while joined.is_alive():
        _run_everything_queued(manual, settle=0.05)
    assert list(it) == [x * x for x in range(10)]


def fail_on_3(x: int) -> int:
    if x == 3:
        raise KeyError(x)
    return x


def test_the_rest_of_an_imap_ended_by_a_failed_chunk_runs_without_a_consumer(manual):
    with distpool.Pool(2) as pool:
        it = pool.imap(fail_on_3, range(20), chunksize=2, buffersize=2)
        _run_everything_queued(manual, until=lambda: it.progress.completed >= 4)
        assert next(it) == 0 and next(it) == 1
        with pytest.raises(KeyError):
            next(it)
        with pytest.raises(StopIteration):
            it.next(timeout=1)
        # As in multiprocessing, every chunk still runs; nobody waits for their results.
        _run_everything_queued(
            manual, until=lambda: len(manual.published) >= 10 and it.progress.completed >= 20)
        assert len(manual.published) == 10 and it.progress.completed == 20


def test_buffersize_must_be_positive(eager_pool):
    with pytest.raises(ValueError, match="buffersize"):
        eager_pool.imap(square, [1], buffersize=0)


def test_tasks_in_flight_fail_once_the_result_store_is_unreachable_for_pool_ttl(manual):
    down = threading.Event()
    pop = manual.store.pop_results

    def pop_unless_down(pool_id, timeout):
        if down.is_set():
            raise ConnectionError("the store is down")
        return pop(pool_id, timeout)

    manual.store.pop_results = pop_unless_down
    pool = distpool.Pool(2, pool_ttl=0.5)
    lost = pool.apply_async(square, (3,))
    manual.wait_published(1)
    down.set()
    with pytest.raises(distpool.BrokerUnavailableError, match="pool_ttl"):
        lost.get(timeout=10)
    down.clear()  # the store is back: the late result is ignored, and the pool works on
    manual.run_one()
    again = pool.apply_async(square, (4,))
    manual.run_until_ready(again)
    assert again.get(timeout=10) == 16
    with pytest.raises(distpool.BrokerUnavailableError):
        lost.get(timeout=0)
    pool.terminate()


def test_tasks_in_flight_fail_when_the_store_lost_the_pools_liveness_key(manual):
    lost_key = threading.Event()
    refresh = manual.store.refresh_pool

    def refresh_and_tell(pool_id, ttl, info, keep=None):
        refresh(pool_id, ttl, info, keep)
        return not lost_key.is_set()

    manual.store.refresh_pool = refresh_and_tell
    pool = distpool.Pool(2, pool_ttl=0.3)  # refreshed every 0.1 s
    lost = pool.apply_async(square, (3,))
    manual.wait_published(1)
    lost_key.set()
    with pytest.raises(distpool.BrokerUnavailableError, match="liveness key"):
        lost.get(timeout=10)
    pool.terminate()


@pytest.mark.parametrize("configure", [
    lambda monkeypatch: {"result_url": "redis://results:6379/0"},
    lambda monkeypatch: monkeypatch.setenv("DISTPOOL_RESULT_URL", "redis://results:6379/0") or {},
])
def test_a_result_store_without_a_broker_is_refused_before_any_cluster_starts(
        monkeypatch, configure):
    for name in ("DISTPOOL_BROKER_URL", "DISTPOOL_RESULT_URL", "DISTPOOL_EAGER"):
        monkeypatch.delenv(name, raising=False)
    kwargs = configure(monkeypatch)
    started = []
    monkeypatch.setattr(distpool.client.pool.LocalCluster, "start",
                        lambda self: started.append(self) or self)
    with pytest.raises(ValueError, match="without a broker"):
        distpool.Pool(2, **kwargs)
    assert started == []
