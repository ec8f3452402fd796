"""Every Redis connection distpool opens says it is distpool's (CLIENT SETINFO)."""

from __future__ import annotations

import redis

import distpool
from distpool.store.redis_identity import client_identity
from distpool.store.redis_store import RedisStore


def test_the_identity_names_distpool_and_redis_py_with_their_versions():
    identity = client_identity()["driver_info"]
    assert identity.formatted_name == f"redis-py(distpool_v{distpool.__version__})"
    assert identity.lib_version == redis.__version__


def test_the_stores_connections_carry_it():
    store = RedisStore("redis://127.0.0.1:6379/0")  # connects on first use only
    kwargs = store._redis.connection_pool.connection_kwargs
    assert kwargs["driver_info"] is client_identity()["driver_info"]
