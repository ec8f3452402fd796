"""The result store against a real Redis: its own connections for pushing and popping
results, and its record of what became of each message."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from distpool.redis_client.protocol import RedisConnectionError
from distpool.store.keys import pool_of
from distpool.store.redis_store import POOL_GONE, RedisStore
from distpool.wire.envelope import MESSAGE_DONE as DONE
from tests.dropping_proxy import ReplyDroppingProxy
from tests.support import message_of_a_live_pool

pytestmark = pytest.mark.integration


def test_a_pop_takes_every_waiting_record_in_order(store):
    pool_id = uuid.uuid4().hex
    store.push_results(pool_id, [b"1", b"2"])
    store.push_results(pool_id, [b"3"])
    assert store.pop_results(pool_id, 1) == [b"1", b"2", b"3"]
    assert store.pop_results(pool_id, 0.1) == []


def test_pushes_and_pops_go_on_after_redis_dropped_their_connections(store, redis_server):
    pool_id = uuid.uuid4().hex
    store.push_results(pool_id, [b"before"])
    assert store.pop_results(pool_id, 1) == [b"before"]  # both connections are open now
    redis.Redis.from_url(redis_server.url(5)).client_kill_filter(_type="normal", skipme=True)
    store.push_results(pool_id, [b"after"])
    assert store.pop_results(pool_id, 1) == [b"after"]


def test_records_whose_pop_reply_is_lost_are_taken_again_and_no_others_twice(redis_server):
    # The reply to a take is lost after Redis moved the records: the connection's retry, or
    # the next take, finds them in the received list; what was acknowledged is not repeated.
    pool_id = uuid.uuid4().hex
    with ReplyDroppingProxy(redis_server.port) as proxy:
        store = RedisStore(proxy.url(5), reply_timeout=5.0)
        try:
            store.push_results(pool_id, [b"first" * 20])
            assert store.pop_results(pool_id, 1) == [b"first" * 20]
            proxy.drop_next_reply_to(b"BLMOVE", b"BLPOP")
            store.push_results(pool_id, [b"lost?" * 20, b"no" * 40])
            assert store.pop_results(pool_id, 2) == [b"lost?" * 20, b"no" * 40]
            assert proxy.dropped.is_set() and b"lost?" in proxy.dropped_reply
            store.push_results(pool_id, [b"next" * 20])
            assert store.pop_results(pool_id, 2) == [b"next" * 20]
            assert store.pop_results(pool_id, 0.1) == []
        finally:
            store.close()


def test_a_named_runs_pool_stays_live_for_its_resume_window_and_its_report_does_not(
        store, redis_server):
    pool_id = uuid.uuid4().hex
    store.refresh_pool(pool_id, 2, {"host": "h"}, keep=600)
    direct = redis.Redis.from_url(redis_server.url(5))
    assert 590_000 < direct.pttl(f"distpool:pool:{pool_id}:live") <= 600_000
    assert direct.pttl(f"distpool:pool:{pool_id}:info") <= 2_000
    assert store.pool_is_live(pool_id)


def test_the_next_client_of_a_pool_reads_what_the_dead_one_left_and_acknowledges_on(
        store, redis_server):
    pool_id = uuid.uuid4().hex
    assert store.resume_pool(pool_id) is None  # (not live: nothing to take over)
    store.refresh_pool(pool_id, 60, {})
    dead = RedisStore(redis_server.url(5))
    store.push_results(pool_id, [b"1", b"2"])
    assert dead.pop_results(pool_id, 1) == [b"1", b"2"]
    store.push_results(pool_id, [b"3"])
    assert dead.pop_results(pool_id, 1) == [b"3"]  # acknowledges 1 and 2
    store.push_results(pool_id, [b"4"])
    dead.close()  # (as its client's death: 3 taken, not acknowledged; 4 unread)
    successor = RedisStore(redis_server.url(5))
    try:
        assert successor.resume_pool(pool_id) == [b"3", b"4"]
        assert successor.pop_results(pool_id, 1) == [b"3", b"4"]
        store.push_results(pool_id, [b"5"])
        assert successor.pop_results(pool_id, 1) == [b"5"]  # acknowledged 3 and 4, on from 2
        assert redis.Redis.from_url(redis_server.url(5)).lrange(
            f"distpool:pool:{pool_id}:received", 0, -1) == [b"5"]
    finally:
        successor.close()


def test_a_claim_keeps_a_message_from_a_second_holder_until_it_lapses(store):
    message = message_of_a_live_pool(store)
    assert store.claim(message, "host:1:a", ttl=0.5) == ("claimed", None, 0)
    assert store.claim(message, "host:1:a", ttl=0.5, renewal=True) == ("claimed", None, 0)
    assert store.claim(message, "host:1:a", ttl=0.5)[:2] == ("held", "host:1:a")  # not twice
    outcome, holder, left = store.claim(message, "host:2:b", ttl=0.5)
    assert (outcome, holder) == ("held", "host:1:a") and 0 < left <= 500
    time.sleep(0.6)  # unrenewed, the claim lapses: the new holder learns whose run it ends
    assert store.claim(message, "host:2:b", ttl=5) == ("claimed", "host:1:a", 0)
    assert not store.take_over(message, "host:1:a", "host:3:c", ttl=5)  # it changed
    assert store.take_over(message, "host:2:b", "host:3:c", ttl=5)
    assert store.claim(message, "host:2:b", ttl=5)[:2] == ("held", "host:3:c")


def test_a_finished_message_is_never_claimed_again(store):
    message = message_of_a_live_pool(store)
    pool_id = pool_of(message)
    assert store.claim(message, "host:1:a", ttl=5).outcome == "claimed"
    store.push_results(pool_id, [b"record"], finished=message)
    assert store.claim(message, "host:2:b", ttl=5) == (DONE, None, -1)
    assert store.message_states(pool_id, [message, f"{pool_id}:0:1"]) == [DONE, None]


def test_no_message_of_a_pool_that_ended_is_claimed_and_nothing_of_it_comes_back(
        store, redis_server):
    message = message_of_a_live_pool(store)
    pool_id = pool_of(message)
    assert store.claim(message, "host:1:a", ttl=5).outcome == "claimed"
    store.close_pool(pool_id)
    assert store.claim(message, "host:2:b", ttl=5) == (POOL_GONE, None, -1)
    assert store.claim_soon(f"{pool_id}:1:0", "host:2:b", ttl=5)().outcome == POOL_GONE
    assert store.claim(message, "host:1:a", ttl=5, renewal=True).outcome == POOL_GONE
    plain = redis.Redis.from_url(redis_server.url(5))
    assert plain.keys(f"distpool:*{pool_id}*") == []


def test_what_a_pool_s_messages_left_goes_with_the_pool(store, redis_server):
    message = message_of_a_live_pool(store, job=3)
    pool_id = pool_of(message)
    store.claim(message, "host:1:a", ttl=5)
    store.mark_timed_out(message)
    assert store.count_redelivery(message) == (1, True)
    assert store.count_redelivery(message) == (2, True)
    store.close_pool(pool_id)
    plain = redis.Redis.from_url(redis_server.url(5))
    assert plain.keys(f"distpool:*{pool_id}*") == []


def test_a_claim_sent_without_waiting_is_read_later_in_order(store):
    message = message_of_a_live_pool(store)
    outcome = store.claim_soon(message, "host:1:a", ttl=5)
    assert store.claim(message, "host:2:b", ttl=5)[:2] == ("held", "host:1:a")
    assert outcome() == ("claimed", None, 0)  # read with the call after it


def test_a_reply_lost_with_its_connection_raises_when_asked_for(store, redis_server):
    message = message_of_a_live_pool(store)
    store.ping()
    redis.Redis.from_url(redis_server.url(5)).client_kill_filter(_type="normal", skipme=True)
    outcome = store.claim_soon(message, "host:1:a", ttl=5)  # written to a dead socket
    store.ping()  # finds it dead, reconnects
    with pytest.raises(RedisConnectionError):
        outcome()
    assert store.claim(message, "host:1:a", ttl=5).outcome == "claimed"
