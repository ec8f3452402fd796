"""The result store's own connections for pushing and popping results, against a real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis

from distpool.backends.redis_store import RedisStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_server):
    store = RedisStore(redis_server.url(5))
    yield store
    store.close()


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
