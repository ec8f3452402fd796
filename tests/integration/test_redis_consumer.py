"""A slot's own consumer against a real Redis (distpool.brokers.redis_consumer.HeldQueue):
the held list is the record of what it holds until it is done, and whatever it cannot vouch
for goes back on the queue."""

from __future__ import annotations

import json
import threading
import time
import uuid

import redis

from distpool.brokers import held_messages
from distpool.brokers.redis_consumer import HeldQueue
from distpool.brokers.redis_publisher import message_document
from distpool.wire.messages import TaskMessage
from tests.hostile import HOSTILE_MESSAGES


def message(name: str) -> bytes:
    document = message_document(TaskMessage(f"{name}:0:0", [], name, None, None), "q",
                                 "gen1@host", name)
    return json.dumps(document).encode()


def setup(redis_server):
    queue, holder = f"q-{uuid.uuid4().hex[:8]}", f"h-{uuid.uuid4().hex[:8]}"
    plain = redis.Redis.from_url(redis_server.url(3))
    return queue, holder, plain, HeldQueue(redis_server.url(3), queue, holder, lease=30)


def test_a_message_stays_held_until_the_take_after_it_is_done(redis_server):
    queue, holder, plain, held = setup(redis_server)
    plain.lpush(queue, message("a"), message("b"))
    first = held.take(1)
    assert first == message("a")
    assert plain.lrange(held_messages.held_list(holder), 0, -1) == [first]
    assert plain.zscore(held_messages.HOLDERS, holder) > time.time()  # its lease
    held.done(first)
    assert held.take(1) == message("b")  # the same write took "a" out
    assert plain.lrange(held_messages.held_list(holder), 0, -1) == [message("b")]
    held.done(message("b"))
    held.close()
    assert plain.llen(held_messages.held_list(holder)) == 0
    assert plain.llen(queue) == 0


def test_what_is_held_at_the_start_goes_back_flagged_and_garbage_is_dropped(redis_server):
    """A consumer that starts (or takes again after a failure) cannot vouch for its held
    list: a take it sent may have moved a message whose reply it never read."""
    queue, holder, plain, held = setup(redis_server)
    key = held_messages.held_list(holder)
    plain.rpush(key, message("lost reply"), *HOSTILE_MESSAGES)
    taken = held.take(1)
    assert json.loads(taken)["properties"]["delivery_info"]["redelivered"] is True
    assert plain.lrange(key, 0, -1) == [taken]  # the hostile items are gone
    held.close()


def test_a_message_put_back_unrun_is_first_again(redis_server):
    queue, holder, plain, held = setup(redis_server)
    plain.lpush(queue, message("a"), message("b"))
    held.put_back(held.take(1))
    again = json.loads(plain.rpop(queue))
    assert again["headers"]["id"] == "a:0:0" and again["headers"]["redelivered"] is True
    held.close()


def test_an_interrupted_take_ends_at_once_and_close_puts_back_what_it_moved(redis_server):
    queue, holder, plain, held = setup(redis_server)
    failed: list[BaseException] = []

    def take() -> None:
        try:
            held.take(30)
        except BaseException as exc:
            failed.append(exc)

    taker = threading.Thread(target=take)
    taker.start()
    time.sleep(0.3)
    started = time.monotonic()
    held.interrupt()
    taker.join(5)
    assert not taker.is_alive() and failed and time.monotonic() - started < 5
    plain.rpush(held_messages.held_list(holder), message("moved meanwhile"))
    held.close()
    assert plain.llen(held_messages.held_list(holder)) == 0
    assert json.loads(plain.rpop(queue))["headers"]["id"] == "moved meanwhile:0:0"
