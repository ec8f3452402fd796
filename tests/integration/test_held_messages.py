"""No instant at which a consumer's death loses the message it has just taken: the held
lists of distpool.brokers.held_messages, against a real Redis and real worker nodes."""

from __future__ import annotations

import os
import signal
import time
import uuid

import psutil
import pytest
import redis
from kombu import Connection

import distpool
from distpool.brokers import held_messages
from distpool.brokers import redis_transport as kombu_redis
from tests.hostile import HOSTILE_MESSAGES
from tests.support import Worker, wait_for_slots

pytestmark = pytest.mark.integration

def unique_queue():
    return f"distpool-test-held-{uuid.uuid4().hex[:8]}"


def square(x):
    return x * x


def test_a_message_taken_by_a_consumer_that_died_before_recording_it_goes_back(redis_server):
    url, queue = redis_server.url(5), unique_queue()
    plain = redis.Redis.from_url(url)
    with (Connection(url, transport=kombu_redis.TRANSPORT) as connection,
          connection.SimpleQueue(queue) as simple):
        simple.put({"n": 1}, serializer="json")
        # What a consumer's BLMOVE does before it dies, its lease then lapsing.
        assert plain.lmove(queue, held_messages.held_list("dead"), "RIGHT", "LEFT")
        plain.zadd(held_messages.HOLDERS, {"dead": time.time() - 1})
        plain.zadd(held_messages.HOLDERS, {"alive": time.time() + 60})
        plain.rpush(held_messages.held_list("alive"), b"kept while its holder lives")
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.5)
        simple.channel.qos.restore_visible(interval=1)  # any consumer's periodic sweep
        message = simple.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        assert plain.llen(held_messages.held_list("dead")) == 0
        assert plain.zscore(held_messages.HOLDERS, "dead") is None
        assert plain.llen(held_messages.held_list("alive")) == 1


def test_two_restores_of_one_held_list_make_one_copy(redis_server):
    url, queue = redis_server.url(5), unique_queue()
    plain = redis.Redis.from_url(url)
    with Connection(url, transport=kombu_redis.TRANSPORT) as connection:
        simple = connection.SimpleQueue(queue)
        simple.put({"n": 2}, serializer="json")
        plain.lmove(queue, held_messages.held_list("gone"), "RIGHT", "LEFT")
        channel = simple.channel
        assert channel.restore_held("gone") == 1
        assert channel.restore_held("gone") == 0
        assert plain.llen(queue) == 1
        # Flagged as a second delivery, where kombu flags what it restores: its holder may
        # have begun to run it (a slot's own consumer holds what it runs).
        assert simple.get(timeout=5).delivery_info["redelivered"] is True
        simple.close()


def test_a_consumer_records_what_it_takes_and_its_held_list_empties(redis_server):
    url, queue = redis_server.url(5), unique_queue()
    plain = redis.Redis.from_url(url)
    with (Connection(url, transport=kombu_redis.TRANSPORT,
                     transport_options={"distpool_holder": "me"}) as connection,
          connection.SimpleQueue(queue) as simple):
        simple.put({"n": 3}, serializer="json")
        message = simple.get(timeout=5)
        simple.channel.qos.confirm()
        assert plain.llen(held_messages.held_list("me")) == 0
        assert plain.hexists("unacked", message.delivery_tag)
        assert plain.zscore(held_messages.HOLDERS, "me") > time.time()  # its lease
        message.ack()


def test_what_is_not_a_message_is_dropped_and_the_consumer_goes_on(redis_server):
    url, queue = redis_server.url(5), unique_queue()
    plain = redis.Redis.from_url(url)
    with (Connection(url, transport=kombu_redis.TRANSPORT,
                     transport_options={"distpool_holder": "me"}) as connection,
          connection.SimpleQueue(queue) as simple):
        for item in HOSTILE_MESSAGES:
            plain.lpush(queue, item)
        simple.put({"n": 4}, serializer="json")
        message = simple.get(timeout=10)
        assert message.payload == {"n": 4}
        message.ack()
        assert plain.llen(queue) == 0
        assert plain.llen(held_messages.held_list("me")) == 0


def test_a_slot_frozen_while_idle_loses_nothing(redis_server):
    """SIGSTOP an idle node while it waits for a message, publish, start a second node,
    SIGKILL the frozen one: the task runs (the issue's reproduction)."""
    queue = unique_queue()
    secret = "s" * 32
    url = redis_server.url()
    options = ["--worker-lost-timeout", "3"]
    frozen = Worker(url, queue, 1, url, options, secret=secret)
    workers = [frozen]
    try:
        wait_for_slots(url, queue, 1, workers)
        with distpool.Pool(1, broker=url, result_url=url, queue=queue, secret=secret) as pool:
            assert pool.apply(square, (2,)) == 4  # consuming
            [slot] = psutil.Process(frozen.process.pid).children()
            os.kill(frozen.process.pid, signal.SIGSTOP)  # the parent too: the whole node
            result = freeze_while_it_waits(slot.pid, pool, queue, redis_server.client)
            rescuer = Worker(url, queue, 1, url, options, secret=secret)
            workers.append(rescuer)
            os.killpg(frozen.process.pid, signal.SIGKILL)
            assert result.get(timeout=30) == 49
    finally:
        for worker in workers:
            worker.stop(signal.SIGKILL)


def freeze_while_it_waits(pid, pool, queue, client):
    """SIGSTOP process ``pid`` while its slot waits for a message, and publish one task: the
    pending wait takes it. Returns the task's result."""
    for _ in range(10):
        time.sleep(0.2)  # done acknowledging the last task: waiting for the next
        os.kill(pid, signal.SIGSTOP)
        result = pool.apply_async(square, (7,))
        time.sleep(0.3)
        if client.llen(queue) == 0:
            return result
        os.kill(pid, signal.SIGCONT)
        assert result.get(timeout=10) == 49
    pytest.fail("the frozen slot never had a wait pending")


def test_the_message_of_a_slot_killed_while_idle_runs_at_once(make_cluster):
    """The parent of a slot killed between taking a message and recording it puts the
    message back at once, not after worker_lost_timeout (30 s here)."""
    cluster = make_cluster(nodes=1, concurrency=1)
    with distpool.Pool(1, **cluster.pool_kwargs()) as pool:
        assert pool.apply(square, (2,)) == 4
        [slot] = psutil.Process(cluster.workers[0].process.pid).children()
        result = freeze_while_it_waits(slot.pid, pool, cluster.queue, cluster.redis.client)
        killed = time.monotonic()
        os.kill(slot.pid, signal.SIGKILL)
        assert result.get(timeout=20) == 49
        assert time.monotonic() - killed < 10
