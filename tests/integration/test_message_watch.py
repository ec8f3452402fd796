"""The client's second line of defence, against a real Redis and real workers: a message
that no worker holds is sent again, and tasks that no worker is left to take fail clearly."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import distpool

pytestmark = pytest.mark.integration


def square(x):
    return x * x


def test_a_message_the_broker_lost_is_sent_again(make_cluster, monkeypatch):
    monkeypatch.setenv("DISTPOOL_WORKER_LOST_TIMEOUT", "1")  # sent again after 2 s
    cluster = make_cluster(nodes=1, concurrency=1)
    node = cluster.workers[0].process.pid
    with distpool.Pool(1, **cluster.pool_kwargs()) as pool:
        assert pool.apply(square, (2,)) == 4
        os.killpg(node, signal.SIGSTOP)
        try:
            result = pool.apply_async(square, (3,))
            deadline = time.monotonic() + 10
            while not cluster.redis.client.llen(cluster.queue):
                assert time.monotonic() < deadline, "the message never reached the queue"
                time.sleep(0.05)
            cluster.redis.client.delete(cluster.queue)  # lost, as a broker may lose it
        finally:
            os.killpg(node, signal.SIGCONT)
        assert result.get(timeout=20) == 9


def test_tasks_fail_clearly_when_redis_at_maxclients_keeps_every_worker_out(
        make_cluster_on_own_redis):
    # A Redis of its own: the limit shuts out every client that connects anew.
    cluster = make_cluster_on_own_redis(concurrency=2)
    client = cluster.redis.client
    limit = client.config_get("maxclients")["maxclients"]
    with distpool.Pool(2, pool_ttl=3, **cluster.pool_kwargs()) as pool:
        assert pool.map(square, range(4), chunksize=1) == [0, 1, 4, 9]
        slots = psutil.Process(cluster.workers[0].process.pid).children()
        try:
            # Below the connections open: Redis keeps those (this client's, the pool's) and
            # refuses every new one, however many close meanwhile. (A limit at the count of
            # the moment let a slot in as soon as any connection closed.)
            client.config_set("maxclients", 1)
            for slot in slots:  # their replacements find no room
                slot.kill()
            psutil.wait_procs(slots, timeout=10)
            result = pool.apply_async(square, (5,))
            started = time.monotonic()
            with pytest.raises(distpool.BrokerUnavailableError, match="no worker"):
                result.get(timeout=90)
            # The dead slots' registrations lapse (30 s), then pool_ttl (3 s) runs out.
            assert time.monotonic() - started < 60
        finally:
            client.config_set("maxclients", limit)
