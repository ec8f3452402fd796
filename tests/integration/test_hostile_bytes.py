"""Nothing anybody pushes onto what distpool reads in Redis stops a pool or a slot: garbage on
the task queue, in kombu's delivery records, in held lists, claims and registrations."""

from __future__ import annotations

import time

import psutil
import pytest

import distpool
from distpool.brokers import held_messages
from distpool.config import resolve
from distpool.status import cluster_status
from tests.hostile import HOSTILE_MESSAGES

pytestmark = pytest.mark.integration


def square(x):
    return x * x


def test_a_cluster_serves_on_whatever_is_written_into_its_redis(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2, extra_args=["--worker-lost-timeout", "2"])
    client = cluster.redis.client
    slots = {slot.pid for slot in psutil.Process(cluster.workers[0].process.pid).children()}
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        assert pool.map(square, range(4), chunksize=1) == [0, 1, 4, 9]
        for item in HOSTILE_MESSAGES:
            client.lpush(cluster.queue, item)
            client.hset("unacked", f"tag-{len(item)}", item)  # swept as lapsed records
            client.zadd("unacked_index", {f"tag-{len(item)}": time.time() - 3600})
            client.rpush(held_messages.held_list("gone"), item)
        client.zadd(held_messages.HOLDERS, {"gone": 0, "\xff never there": 0})
        client.hset(f"distpool:slots:{cluster.queue}", "intruder", b"\xff not a count")
        client.zadd(f"distpool:workers:{cluster.queue}", {"intruder": time.time() + 3600})
        client.hset(f"distpool:pool:{pool._pool_id}:messages",
                    mapping={f"{pool._pool_id}:1:0": b"\xff", f"{pool._pool_id}:1:1": b"1 "})
        client.set("distpool:pool:intruder:info", b"[" * 100_000, ex=60)  # gone after: shared
        time.sleep(3)  # a sweep or two
        assert pool.map(square, range(8), chunksize=1) == [x * x for x in range(8)]
        status = cluster_status(resolve(broker=cluster.broker, result_url=cluster.result_url,
                                        queue=cluster.queue))
        assert status["queue_depth"] == 0
    assert client.hlen("unacked") == 0 and client.llen(held_messages.held_list("gone")) == 0
    assert {slot.pid for slot in psutil.Process(cluster.workers[0].process.pid).children()} \
        == slots, "a slot died"
