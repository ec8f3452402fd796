"""What a process imports with distpool: nothing heavy before it is used, and no Celery,
kombu or redis-py in a client of a Redis broker (they took most of a first pool's time to its
first result). Each check runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

import distpool


def modules_after(code: str) -> set[str]:
    completed = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True)
    return set(completed.stdout.split())


def test_importing_distpool_loads_none_of_its_dependencies_nor_its_client():
    loaded = modules_after("import distpool")
    heavy = {"celery", "kombu", "redis", "dill", "numpy", "multiprocessing.pool",
             "distpool.client", "distpool.transports", "joblib", "distpool.joblib"}
    assert not heavy & loaded


def test_a_redis_client_loads_neither_celery_nor_kombu_nor_redis_py():
    # Everything a pool on a Redis broker uses, up to its backend's publisher and store.
    loaded = modules_after(
        "import distpool\n"
        "from distpool.brokers.redis_publisher import RedisPublisher\n"
        "from distpool.config import resolve\n"
        "from distpool.store.redis_store import RedisStore\n"
        "import distpool.transports\n"
        "RedisPublisher(resolve(broker='redis://127.0.0.1:1/0', secret='k' * 32, environ={}))\n"
        "RedisStore('redis://127.0.0.1:1/0')\n"
        "distpool.Pool, distpool.Executor, distpool.TimeoutError")
    assert "distpool.brokers.redis_publisher" in loaded
    assert not {"celery", "kombu", "redis", "asyncio", "ssl", "numpy"} & loaded


def test_every_export_resolves_and_is_listed():
    for name in distpool.__all__:
        assert getattr(distpool, name) is not None
    assert set(distpool.__all__) <= set(dir(distpool))
    with pytest.raises(AttributeError, match="no_such_thing"):
        distpool.no_such_thing  # noqa: B018


def test_exports_are_the_objects_of_their_modules():
    import multiprocessing

    from distpool.client.pool import Pool
    from distpool.errors import MaybeEncodingError

    assert distpool.Pool is Pool
    assert distpool.MaybeEncodingError is MaybeEncodingError
    assert distpool.TimeoutError is multiprocessing.TimeoutError
