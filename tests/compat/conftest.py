"""The compatibility suite: the same test bodies against multiprocessing.Pool and distpool.Pool.

``make_pool`` is parametrised over both; a test passes only if both behave as it asserts.
distpool pools run on the session's shared cluster of real worker processes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import distpool
from tests.support import Cluster

#: The cluster that distpool pools of this suite use; set once per session.
cluster: Cluster | None = None


def distpool_pool(*args: Any, **kwargs: Any) -> distpool.Pool:
    """``distpool.Pool`` on the compat suite's cluster, with multiprocessing's signature."""
    assert cluster is not None, "the compat suite's cluster is not running"
    return distpool.Pool(*args, **cluster.pool_kwargs(), **kwargs)


@pytest.fixture(scope="session", autouse=True)
def _compat_cluster(shared_cluster: Cluster) -> Iterator[None]:
    global cluster
    cluster = shared_cluster
    yield
    cluster = None


@pytest.fixture(params=["multiprocessing", "distpool"])
def make_pool(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """A Pool factory of either kind; every pool it makes is terminated after the test."""
    factory = multiprocessing.Pool if request.param == "multiprocessing" else distpool_pool
    pools: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        pool = factory(*args, **kwargs)
        pools.append(pool)
        return pool

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for pool in pools:
        pool.terminate()
        pool.join()

