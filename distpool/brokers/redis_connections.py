"""Where the Redis transport's commands go (see :mod:`.redis_transport`): the pool of command
connections that the process's channels share, and the broker URL of kombu's connection.

kombu gives each channel a pool of its own, and a worker has two channels (its task
consumer's, its remote control's) whose commands are sent from one thread: one shared pool
lets one connection serve both, and a slot stays within its connection budget.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

# The pools of the process's channels' command connections, one per set of connection
# parameters.
_command_pools: dict[tuple[Any, ...], Any] = {}
_command_pools_lock = threading.Lock()


def shared_pool(params: dict[str, Any], pool: Any) -> Any:
    """The process's pool for connections made with ``params`` (what kombu built ``pool``
    from): the first one given for them."""
    # Keyed by kombu's parameters (redis-py adds objects of each pool's own).
    key = tuple(sorted((name, _comparable(value)) for name, value in params.items()))
    with _command_pools_lock:
        return _command_pools.setdefault(key, pool)


def _comparable(value: Any) -> Any:
    """A connection parameter as part of a pool's key: plain values as they are, containers
    by their text, any other object (a credential provider, the driver info) by identity:
    two channels share a pool only when they certainly connect alike."""
    if value is None or isinstance(value, (str, int, float, type)):
        return value
    if isinstance(value, (dict, list, tuple)):
        return repr(value)
    return id(value)


def url_of(client: Any) -> str:
    """The Redis URL of a kombu connection made without distpool's settings (no TLS options
    but its own)."""
    credentials = ""
    if client.userid or client.password:
        credentials = (f"{quote(client.userid or '', safe='')}:"
                       f"{quote(client.password or '', safe='')}@")
    db = str(client.virtual_host or "0").strip("/") or "0"
    return (f"{'rediss' if client.ssl else 'redis'}://{credentials}{client.hostname}:"
            f"{client.port or 6379}/{db}")
