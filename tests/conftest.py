"""Fixtures shared by the integration and compatibility suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Cluster, RedisServer


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
