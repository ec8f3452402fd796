"""Settings, resolved in one place: explicit arguments > ``DISTPOOL_*`` environment > defaults.

The pool (client side) and ``distpool worker`` both call :func:`resolve`, so a cluster
configured through the environment needs no arguments on either side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

#: Where ``distpool worker`` connects when no broker is configured. A pool with no broker
#: configured starts a private local cluster instead (see distpool.cluster).
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "distpool"

#: A pool's liveness key lives this long unless the client refreshes it; workers skip the
#: tasks of a pool whose key is gone (terminated, or its client died).
DEFAULT_POOL_TTL = 60.0
#: A task held by a worker node that stops renewing its hold (the node died) is handed to
#: another worker after this long (Redis brokers; RabbitMQ does it when the connection drops).
DEFAULT_WORKER_LOST_TIMEOUT = 30.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    broker_url: str | None  # None: not configured
    result_url: str | None  # None: the broker's, once there is one
    queue: str
    eager: bool
    pool_ttl: float
    worker_lost_timeout: float = DEFAULT_WORKER_LOST_TIMEOUT
    task_timeout: float | None = None  # None: tasks may run as long as they like

    def with_broker(self, broker_url: str) -> Settings:
        """These settings with ``broker_url`` as the broker, and as the result store too
        unless one is configured."""
        return replace(self, broker_url=broker_url,
                       result_url=self.result_url or _default_result_url(broker_url))

    def __repr__(self) -> str:
        return (
            f"Settings(broker_url={_masked(self.broker_url)!r}, "
            f"result_url={_masked(self.result_url)!r}, queue={self.queue!r}, "
            f"eager={self.eager!r}, pool_ttl={self.pool_ttl!r}, "
            f"worker_lost_timeout={self.worker_lost_timeout!r}, "
            f"task_timeout={self.task_timeout!r})"
        )


def resolve(
    broker: str | None = None,
    result_url: str | None = None,
    queue: str | None = None,
    eager: bool | None = None,
    pool_ttl: float | None = None,
    worker_lost_timeout: float | None = None,
    task_timeout: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Return the settings in force, each from the first of: argument, environment, default."""
    env = os.environ if environ is None else environ
    broker_url = broker or env.get("DISTPOOL_BROKER_URL") or None
    result_url = result_url or env.get("DISTPOOL_RESULT_URL") or None
    if broker_url is not None and result_url is None:
        result_url = _default_result_url(broker_url)
    return Settings(
        broker_url=broker_url,
        result_url=result_url,
        queue=queue or env.get("DISTPOOL_QUEUE") or DEFAULT_QUEUE,
        eager=_flag(eager, env.get("DISTPOOL_EAGER"), "DISTPOOL_EAGER"),
        pool_ttl=_or(_seconds(pool_ttl, env.get("DISTPOOL_POOL_TTL"), "pool_ttl",
                              "DISTPOOL_POOL_TTL"), DEFAULT_POOL_TTL),
        worker_lost_timeout=_or(_seconds(
            worker_lost_timeout, env.get("DISTPOOL_WORKER_LOST_TIMEOUT"), "worker_lost_timeout",
            "DISTPOOL_WORKER_LOST_TIMEOUT"), DEFAULT_WORKER_LOST_TIMEOUT),
        task_timeout=_seconds(task_timeout, env.get("DISTPOOL_TASK_TIMEOUT"), "task_timeout",
                              "DISTPOOL_TASK_TIMEOUT"),
    )


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs, errors and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _default_result_url(broker_url: str) -> str:
    # Results need Redis even when RabbitMQ is the broker; a Redis broker doubles as the store.
    if broker_url.split("://", 1)[0] in ("redis", "rediss", "redis+socket"):
        return broker_url
    return DEFAULT_BROKER_URL


def _masked(url: str | None) -> str | None:
    return None if url is None else mask_url(url)


def _flag(explicit: bool | None, raw: str | None, name: str) -> bool:
    if explicit is not None:
        return bool(explicit)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")


def _seconds(explicit: float | None, raw: str | None, argument: str,
             variable: str) -> float | None:
    """A positive number of seconds from the argument, else the variable, else None."""
    if explicit is not None:
        value, source = float(explicit), argument
    elif raw:
        try:
            value, source = float(raw), variable
        except ValueError:
            raise ValueError(f"{variable} must be a number of seconds; got {raw!r}") from None
    else:
        return None
    if value <= 0:
        raise ValueError(f"{source} must be positive; got {value}")
    return value


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
