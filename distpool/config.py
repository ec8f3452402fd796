"""Settings, resolved in one place: explicit arguments > ``DISTPOOL_*`` environment > defaults.

The pool (client side) and ``distpool worker`` both call :func:`resolve`, so a cluster
configured through the environment needs no arguments on either side.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .brokers.profiles import profile_for
from .errors import SecretKeyMissingError
from .flags import parse_flag
from .redis_client.endpoint import Endpoint

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
#: How long a stopped worker node's running tasks get to finish (``--stop-timeout``).
DEFAULT_STOP_TIMEOUT = 30.0
#: How long the workers keep a named run's work after its client died, for the run's next
#: client to take over (see distpool.client.adoption).
DEFAULT_RESUME_WINDOW = 3600.0

#: What a pool ships of the user's own modules by default (see distpool.client.shipping).
SHIP_AUTO = ("auto",)


@dataclass(frozen=True)
class Settings:
    broker_url: str | None  # None: not configured
    result_url: str | None  # None: the broker's, once there is one
    queue: str
    eager: bool
    pool_ttl: float
    worker_lost_timeout: float = DEFAULT_WORKER_LOST_TIMEOUT
    task_timeout: float | None = None  # None: tasks may run as long as they like
    secret: bytes | None = None  # the key that signs tasks and results
    insecure: bool = False  # run without a key, on purpose
    ship: tuple[str, ...] = SHIP_AUTO  # the user's modules that travel: () for none
    strict_versions: bool = False  # a worker with other versions refuses tasks
    resume_window: float = DEFAULT_RESUME_WINDOW  # a named run's work outlives its client

    def with_broker(self, broker_url: str, secret: bytes | None = None) -> Settings:
        """These settings with ``broker_url`` as the broker, and as the result store too
        unless one is configured; with ``secret`` as the key, if given."""
        return replace(self, broker_url=broker_url,
                       result_url=_result_url(broker_url, self.result_url),
                       secret=self.secret if secret is None else secret)

    def require_secret(self) -> None:
        """Refuse to talk to a broker without a key, unless told to run insecure."""
        if self.secret is None and not self.insecure:
            raise SecretKeyMissingError(
                f"no secret key for the broker at {_masked(self.broker_url)}: workers run only "
                "tasks signed with the key they share with their clients. Set DISTPOOL_SECRET "
                "(or DISTPOOL_SECRET_FILE, a file holding it) on the clients and on the "
                "workers, or pass secret=... to the Pool and --secret-file to the workers. On "
                "a network you trust completely, insecure=True (--insecure for workers) runs "
                "without one.")

    def __repr__(self) -> str:
        return (
            f"Settings(broker_url={_masked(self.broker_url)!r}, "
            f"result_url={_masked(self.result_url)!r}, queue={self.queue!r}, "
            f"eager={self.eager!r}, pool_ttl={self.pool_ttl!r}, "
            f"worker_lost_timeout={self.worker_lost_timeout!r}, "
            f"task_timeout={self.task_timeout!r}, "
            f"secret={'<set>' if self.secret is not None else None}, "
            f"insecure={self.insecure!r}, ship={self.ship!r}, "
            f"strict_versions={self.strict_versions!r}, "
            f"resume_window={self.resume_window!r})"
        )


def resolve(
    broker: str | None = None,
    result_url: str | None = None,
    queue: str | None = None,
    eager: bool | None = None,
    pool_ttl: float | None = None,
    worker_lost_timeout: float | None = None,
    task_timeout: float | None = None,
    secret: str | bytes | None = None,
    secret_file: str | None = None,
    insecure: bool | None = None,
    ship: str | bool | Iterable[str | os.PathLike[str]] | None = None,
    strict_versions: bool | None = None,
    resume_window: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Return the settings in force, each from the first of: argument, environment, default."""
    env = os.environ if environ is None else environ
    broker_url = broker or env.get("DISTPOOL_BROKER_URL") or None
    result_url = result_url or env.get("DISTPOOL_RESULT_URL") or None
    if broker_url is not None:
        result_url = _result_url(broker_url, result_url)
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
        secret=_secret(secret, secret_file, env),
        insecure=_flag(insecure, env.get("DISTPOOL_INSECURE"), "DISTPOOL_INSECURE"),
        ship=_ship(ship, env.get("DISTPOOL_SHIP")),
        strict_versions=_flag(strict_versions, env.get("DISTPOOL_STRICT_VERSIONS"),
                              "DISTPOOL_STRICT_VERSIONS"),
        resume_window=_or(_seconds(resume_window, env.get("DISTPOOL_RESUME_WINDOW"),
                                   "resume_window", "DISTPOOL_RESUME_WINDOW"),
                          DEFAULT_RESUME_WINDOW),
    )


def resolve_for_cluster(**kwargs: Any) -> Settings:
    """:func:`resolve`, for the commands that join or inspect a running cluster
    (``distpool worker``, ``distpool status``): they have no private cluster to fall back
    on, so with no broker configured they use the conventional local Redis."""
    settings = resolve(**kwargs)
    if settings.broker_url is None:
        settings = settings.with_broker(DEFAULT_BROKER_URL)
    return settings


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


def _secret(explicit: str | bytes | None, path: str | None,
            env: Mapping[str, str]) -> bytes | None:
    """The key: argument, else $DISTPOOL_SECRET, else the file named by the argument or by
    $DISTPOOL_SECRET_FILE, else None."""
    value = explicit if explicit is not None else env.get("DISTPOOL_SECRET")
    if value is None:
        path = path or env.get("DISTPOOL_SECRET_FILE")
        if path is None:
            return None
        try:
            value = Path(path).read_bytes().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the secret key file {path}: {exc.strerror}") from None
    key = value.encode() if isinstance(value, str) else bytes(value)
    if not key:
        raise ValueError("the secret key is empty")
    return key


def _result_url(broker_url: str, configured: str | None) -> str:
    """The result store's URL: the one configured, else the broker's if it can hold results
    (Redis). Raises ValueError for a broker distpool does not support, a result store URL
    it cannot read, or a broker that cannot hold results with none configured: each worker
    would look for the pool's keys in a Redis of its own guessing."""
    profile = profile_for(broker_url)
    if configured is not None:
        try:
            Endpoint.from_url(configured)
        except ValueError as exc:
            raise ValueError(f"result_url {mask_url(configured)}: {exc}") from None
        return configured
    if not profile.stores_results:
        raise ValueError(
            f"an {profile.name} broker ({mask_url(broker_url)}) holds no results: set the "
            "result store too, a Redis URL that the clients and every worker reach "
            "(result_url=..., DISTPOOL_RESULT_URL, or --result-url for workers)")
    return broker_url


def _masked(url: str | None) -> str | None:
    return None if url is None else mask_url(url)


def _flag(explicit: bool | None, raw: str | None, name: str) -> bool:
    if explicit is not None:
        return bool(explicit)
    if raw is None:
        return False
    value = parse_flag(raw)
    if value is None:
        raise ValueError(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")
    return value


def _ship(explicit: str | bool | Iterable[str | os.PathLike[str]] | None,
          raw: str | None) -> tuple[str, ...]:
    """The ``ship`` entries: ``("auto",)``, ``()`` (off), or modules and paths, from the
    argument (``"auto"``, False, a comma-separated string or a list), else DISTPOOL_SHIP."""
    if explicit is None:
        if raw is None or not raw.strip():
            return SHIP_AUTO
        flag = parse_flag(raw)
        if flag is not None:
            return SHIP_AUTO if flag else ()
        explicit = raw
    if isinstance(explicit, bool):
        return SHIP_AUTO if explicit else ()
    if isinstance(explicit, str):
        entries: list[str] = [entry.strip() for entry in explicit.split(",") if entry.strip()]
    else:
        try:
            entries = [os.fspath(entry) for entry in explicit]
        except TypeError:
            raise TypeError("ship must be 'auto', False, or a list of modules and paths; got "
                            f"{explicit!r}") from None
    if not entries:
        raise ValueError("ship names nothing: give ship=False to ship no modules")
    return tuple(entries)


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
