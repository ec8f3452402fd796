"""The Redis connections kombu opens for distpool say they are distpool's (CLIENT SETINFO)."""

from __future__ import annotations

import redis

import distpool
from distpool.brokers.redis_identity import client_identity


def test_the_identity_names_distpool_and_redis_py_with_their_versions():
    if not hasattr(redis, "DriverInfo"):  # an older redis-py (6.4 on Python 3.9): its parameters
        assert client_identity() == {"lib_name": f"redis-py(distpool_v{distpool.__version__})",
                                     "lib_version": redis.__version__}
        return
    identity = client_identity()["driver_info"]
    assert identity.formatted_name == f"redis-py(distpool_v{distpool.__version__})"
    assert identity.lib_version == redis.__version__
