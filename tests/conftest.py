"""Fixtures shared by the suites."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from distpool import platform
from distpool.store.redis_store import RedisStore
from tests.support import WINDOWS_MODE, Cluster, RedisServer

if WINDOWS_MODE:  # the clients, here, take Windows' decisions too (see tests/windows_mode)
    platform.windows = True


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_cluster(redis_server: RedisServer) -> Iterator[Cluster]:
    """Two worker nodes x two processes, shared by the tests that need no isolation."""
    cluster = Cluster(redis_server, nodes=2, concurrency=2)
    yield cluster
    cluster.stop()


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisStore]:
    """A result store on the session's Redis."""
    store = RedisStore(redis_server.url(5))
    yield store
    store.close()


@pytest.fixture
def make_cluster(redis_server: RedisServer) -> Iterator[type]:
    """Start clusters with their own queue for one test; all are stopped after it."""
    started = []

    def start(**kwargs: object) -> Cluster:
        cluster = Cluster(redis_server, **kwargs)  # type: ignore[arg-type]
        started.append(cluster)
        return cluster

    yield start  # type: ignore[misc]
    for cluster in started:
        cluster.stop()


@pytest.fixture
def make_cluster_on_own_redis() -> Iterator[type]:
    """Start clusters each on a Redis of its own, for the tests that stop, restart or wipe
    it (``persistent=True``: one that keeps an append-only file); all are stopped after."""
    started = []

    def start(persistent: bool = False, **kwargs: object) -> Cluster:
        server = RedisServer(persistent=persistent)
        try:
            cluster = Cluster(server, **kwargs)  # type: ignore[arg-type]
        except BaseException:
            server.stop()
            raise
        started.append((cluster, server))
        return cluster

    yield start  # type: ignore[misc]
    for cluster, server in started:
        cluster.stop()
        server.stop()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What pools send through ``apply_async``, one callable a call (the joblib backend's
    batches)."""
    from distpool import Pool  # (here: loading this file must not load the client)

    calls: list[Any] = []
    apply_async = Pool.apply_async

    def counting(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return apply_async(self, func, *args, **kwargs)

    monkeypatch.setattr(Pool, "apply_async", counting)
    return calls
