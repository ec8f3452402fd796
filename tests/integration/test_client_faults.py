"""The client against a real Redis and real workers: what lands on its result list, and what
its user's callbacks do, never stops a pool."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis

import distpool
from distpool.errors import AuthenticationError, BrokerUnavailableError
from tests.dropping_proxy import ReplyDroppingProxy
from tests.hostile import HOSTILE_RECORDS

pytestmark = pytest.mark.integration


def square(x):
    return x * x


def nap(seconds):
    time.sleep(seconds)
    return seconds


@pytest.mark.parametrize("listed", ["results", "received"])  # the two lists the client reads
def test_hostile_records_on_the_result_list_stop_neither_results_nor_liveness(shared_cluster,
                                                                              listed):
    store = redis.Redis.from_url(shared_cluster.result_url)
    with distpool.Pool(2, **shared_cluster.pool_kwargs(), pool_ttl=2) as pool:
        results_key = f"distpool:pool:{pool._pool_id}:{listed}"
        in_flight = pool.apply_async(nap, (1.0,))
        # A record for a task in flight, not signed with the key: it fails that task only.
        task_id = f"{pool._pool_id}:{in_flight._job}:0"
        deadline = time.monotonic() + 10
        while task_id not in pool._engine._flight.task_ids():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        store.rpush(results_key, *HOSTILE_RECORDS.values(),
                    b'{"task":"%s","ok":true,"signature":"00"}\n' % task_id.encode())
        with pytest.raises(AuthenticationError):
            in_flight.get(timeout=20)
        time.sleep(3)  # longer than pool_ttl: the key lapses unless the collector lives
        assert store.exists(f"distpool:pool:{pool._pool_id}:live")
        assert pool.map_async(square, range(20), chunksize=1).get(timeout=20) == [
            x * x for x in range(20)]
    store.close()


def test_a_callback_longer_than_pool_ttl_fails_nothing(shared_cluster):
    # The report: an 8 s callback with pool_ttl=5 failed the tasks in flight.
    with distpool.Pool(2, **shared_cluster.pool_kwargs(), pool_ttl=2) as pool:
        started, seen = threading.Event(), []

        def slow_callback(value):
            started.set()
            time.sleep(4)
            seen.append(value)

        slow = pool.apply_async(square, (3,), callback=slow_callback)
        assert started.wait(20)
        in_flight = pool.apply_async(nap, (5.0,))  # runs on a worker while the callback does
        assert in_flight.get(timeout=30) == 5.0
        assert slow.get(timeout=30) == 9 and seen == [9]


def test_a_frozen_redis_fails_the_callers_wait_in_bounded_time(make_cluster_on_own_redis,
                                                                monkeypatch):
    # A Redis that stops answering (SIGSTOP here; a paused VM, or a partition that drops
    # packets) held the collector's pop for ever: get() without a timeout never returned.
    monkeypatch.setattr("distpool.transports.REPLY_TIMEOUT", 1.0)
    cluster = make_cluster_on_own_redis(concurrency=1)
    pool = distpool.Pool(1, **cluster.pool_kwargs(), pool_ttl=3)
    try:
        assert pool.apply(square, (2,)) == 4
        running = pool.apply_async(nap, (30,))
        time.sleep(1)
        os.kill(cluster.redis.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        try:
            with pytest.raises(BrokerUnavailableError, match="unreachable .* pool_ttl"):
                running.get(timeout=40)
            assert time.monotonic() - started < 15
        finally:
            os.kill(cluster.redis.process.pid, signal.SIGCONT)
    finally:
        pool.terminate()
        pool.join()


def test_a_map_completes_though_the_reply_carrying_its_results_is_lost(shared_cluster):
    # Redis has taken the records off the results when the connection is cut: they exist
    # nowhere but in that lost reply, unless the take left them somewhere to find again.
    with ReplyDroppingProxy(shared_cluster.redis.port) as proxy:
        with distpool.Pool(2, **{**shared_cluster.pool_kwargs(),
                                 "result_url": proxy.url()}) as pool:
            assert pool.map(square, range(4)) == [0, 1, 4, 9]
            proxy.drop_next_reply_to(b"BLMOVE", b"BLPOP")
            assert pool.map_async(nap, [0.5] * 4, chunksize=1).get(timeout=30) == [0.5] * 4
            assert pool.map(square, range(100), chunksize=10) == [x * x for x in range(100)]
        assert proxy.dropped.is_set()
