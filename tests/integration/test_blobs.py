"""Blobs in a real Redis: stored in parts, read back exactly, and refused when anything about
them is not what their signed reference says (missing, expired, cut short, too long, altered)."""

from __future__ import annotations

import time
import uuid

import numpy
import pytest
import redis

from distpool.errors import EnvelopeError, PayloadTooLargeError
from distpool.store import blobs as blobs_module
from distpool.store import keys
from distpool.store.redis_store import RedisStore
from distpool.wire import serialization
from distpool.wire.payload import BlobRef
from tests.support import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of 1,000 bytes, so that a few kilobytes exercise what megabytes would."""
    monkeypatch.setattr(blobs_module, "PART_SIZE", 1000)
    monkeypatch.setattr(blobs_module, "PARTS_PER_ROUND_TRIP", 3)


def stored(store, size=10_000):
    """A pool id, and a payload stored as its blob (name: its hash)."""
    pool_id = uuid.uuid4().hex
    payload = serialization.dumps(numpy.arange(size // 8, dtype=numpy.float64))
    ref = store.blobs.put(pool_id, payload.digest, payload, "the test's array", ttl=60)
    return pool_id, payload, ref


def test_a_blob_comes_back_exactly_in_parts_and_writable(store, redis_server, small_parts):
    pool_id, payload, ref = stored(store)
    client = redis.Redis.from_url(redis_server.url(5))
    assert client.hlen(keys.blobs(pool_id)) == -(-payload.nbytes // 1000)
    loaded = serialization.loads(store.blobs.get(pool_id, ref.digest, ref))
    assert numpy.array_equal(loaded, numpy.arange(10_000 // 8, dtype=numpy.float64))
    loaded[0] = 42.0  # points into the buffer read, which is the reader's own
    assert 0 < client.pttl(keys.blobs(pool_id)) <= 60_000


def test_take_deletes_the_blob(store, small_parts):
    pool_id, _, ref = stored(store)
    store.blobs.take(pool_id, ref.digest, ref)
    with pytest.raises(EnvelopeError, match="missing"):
        store.blobs.get(pool_id, ref.digest, ref)


@pytest.mark.parametrize("damage, message", [
    (lambda client, key, name: client.delete(key), "missing"),
    (lambda client, key, name: client.hdel(key, f"{name}/9"), "cut short after 9,000 bytes"),
    (lambda client, key, name: client.hset(key, f"{name}/3", b"x" * 1001), "longer than"),
    (lambda client, key, name: client.hset(key, f"{name}/4", b"\0" * 1000), "does not match"),
    (lambda client, key, name: client.hset(key, f"{name}/0", b"x" * 10), "cut short"),
])
def test_a_damaged_blob_is_refused_saying_how(store, redis_server, small_parts, damage,
                                               message):
    pool_id, _, ref = stored(store)
    client = redis.Redis.from_url(redis_server.url(5))
    damage(client, keys.blobs(pool_id), ref.digest)
    with pytest.raises(EnvelopeError, match=message):
        store.blobs.get(pool_id, ref.digest, ref)
    store.ping()  # the connection serves on, whatever was left unread on it


def test_a_reference_that_overstates_the_size_is_refused(store, small_parts):
    pool_id, payload, ref = stored(store)
    with pytest.raises(EnvelopeError, match="cut short"):
        store.blobs.get(pool_id, ref.digest, BlobRef(ref.digest, ref.size + 1))
    with pytest.raises(EnvelopeError, match="longer than"):
        store.blobs.get(pool_id, ref.digest, BlobRef(ref.digest, ref.size - 1))


def test_blobs_expire_with_their_pool(store, redis_server, small_parts):
    pool_id = uuid.uuid4().hex
    payload = serialization.dumps(b"x" * 5000)
    ref = store.blobs.put(pool_id, payload.digest, payload, "data", ttl=0.3)
    time.sleep(0.5)
    with pytest.raises(EnvelopeError, match="missing"):
        store.blobs.get(pool_id, ref.digest, ref)
    # A worker's write keeps the pool's expiry: what its liveness key has left, or a short
    # one when the pool is gone (its client died: nobody will read or delete it).
    client = redis.Redis.from_url(redis_server.url(5))
    store.refresh_pool(pool_id, 30, {})
    store.blobs.put(pool_id, "result", payload, "a result")
    assert 25_000 < client.pttl(keys.blobs(pool_id)) <= 30_000
    gone = uuid.uuid4().hex
    store.blobs.put(gone, "result", payload, "a result")
    assert 0 < client.pttl(keys.blobs(gone)) <= blobs_module.ORPHAN_TTL_MS


def test_closing_the_pool_deletes_its_blobs(store, redis_server):
    pool_id, _, _ = stored(store)
    store.close_pool(pool_id)
    assert not redis.Redis.from_url(redis_server.url(5)).exists(keys.blobs(pool_id))


def test_a_blob_larger_than_redis_has_room_for_fails_naming_sizes_and_leaves_nothing():
    server = RedisServer()
    try:
        server.client.config_set("maxmemory", 8 * 2**20)
        store = RedisStore(server.url())
        payload = serialization.dumps(numpy.ones(2**21))  # 16 MiB
        with pytest.raises(PayloadTooLargeError) as info:
            store.blobs.put("p", payload.digest, payload, "the arguments of task p:0:0", 60)
        text = str(info.value)
        assert "the arguments of task p:0:0" in text and "16.0 MiB" in text
        assert "maxmemory 8.00M" in text
        assert server.client.hlen(keys.blobs("p")) == 0
        store.ping()  # and the connection serves on
        store.close()
    finally:
        server.stop()
