"""How the workers' redis-py connections (kombu's transport) name themselves to the server
(``CLIENT SETINFO``).

They report the library name ``redis-py(distpool_v<version>)``, so that ``CLIENT LIST`` on a
shared Redis tells distpool's connections apart (Celery's Redis result backend does the same
for its own); distpool's own connections report ``distpool``
(:mod:`distpool.redis_client.connection`).

Saying it also saves time: left to itself, redis-py looks its own version up in the installed
packages' metadata for every client object it builds, which costs as much as a command.
"""

from __future__ import annotations

import functools
from typing import Any

import redis

from .._version import __version__

LIBRARY = "distpool"


@functools.cache
def client_identity() -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis`` and ``redis.ConnectionPool``."""
    try:
        from redis import DriverInfo
    except ImportError:  # an older redis-py has only the parameters DriverInfo replaced
        return {"lib_name": f"redis-py({LIBRARY}_v{__version__})",
                "lib_version": redis.__version__}
    return {"driver_info": DriverInfo(lib_version=redis.__version__)
            .add_upstream_driver(LIBRARY, __version__)}
