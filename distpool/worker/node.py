"""Running a worker node: :func:`run`, which ``distpool worker`` calls, and which chooses the
process model.

* The slots (:mod:`.slots`), the default, and for ``--pool solo``, the model's earlier name:
  one Celery worker process of one slot each, under a parent that replaces them.
* Any other Celery pool (``--pool prefork``, ``threads``, ...): Celery's own worker, run in
  this process by :func:`.app.run_worker`. ``prefork`` (or ``processes``) is distpool's
  (:mod:`.prefork`), and refused on Windows, where Celery's prefork does not run
  (celery/celery#4178). ``threads`` cannot stop a thread, so its time limits are not
  enforced: the worker says so once per pool (:mod:`.app`).

A new process model is one more branch here, and a package of its own beside :mod:`.slots`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from .. import platform
from ..config import DEFAULT_STOP_TIMEOUT, Settings
from ..errors import DistpoolError
from . import bundles
from .app import create_app, run_worker
from .claims import process_holder
from .prefork import POOL as PREFORK_POOL
from .slots.parent import run_slots

logger = logging.getLogger("distpool")

#: The ``--pool`` values that choose the slots: none given, or the model's earlier name.
SLOT_POOLS = (None, "solo")
#: The ``--pool`` values of Celery's prefork pool.
PREFORK_POOLS = ("prefork", "processes")


def run(settings: Settings, *, concurrency: int | None = None, name: str | None = None,
        loglevel: str = "WARNING", extra_args: Sequence[str] = (),
        pool: str | None = None, stop_timeout: float = DEFAULT_STOP_TIMEOUT) -> int:
    """Run a worker node serving ``settings.queue`` until it is stopped (SIGTERM, Ctrl-C);
    return its exit status.

    ``concurrency``: tasks at a time (default: the CPU count). ``name``: the Celery node
    name, Celery's ``%h`` placeholders allowed (default ``distpool-<pid>@%h``; slot ``i`` of
    the slots model is ``<node>-<i>@<host>``). ``loglevel``: of the workers, and of the slots'
    parent. ``extra_args``: ``celery worker`` options, passed on unchanged (to every slot).
    ``pool``: Celery's ``--pool``, which chooses the process model (see above).
    ``stop_timeout``: how long the slots' running tasks get to finish once the node is
    stopped (Celery's own pools take their own time).

    Raises :class:`~distpool.errors.SecretKeyMissingError` before starting anything if
    ``settings`` has no key and is not ``insecure``, and
    :class:`~distpool.errors.DistpoolError` for a process model that cannot run here.
    """
    settings.require_secret()  # once, here: the slots do not check it again
    if pool in PREFORK_POOLS and platform.windows:
        raise DistpoolError(
            f"--pool {pool} does not run on Windows: Celery's prefork pool needs fork() and "
            "POSIX signals (celery/celery#4178). Leave --pool out: distpool's slots, one "
            "worker process per task at a time, run there")
    if concurrency is None:
        concurrency = os.cpu_count() or 1
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    name = name or f"distpool-{os.getpid()}@%h"
    _require_redis(settings)
    _prune_bundles()
    if pool in SLOT_POOLS:
        return run_slots(settings, concurrency, name, loglevel, extra_args, stop_timeout)
    app = create_app(settings, process_holder())
    if pool in PREFORK_POOLS:
        # By the setting: Celery's --pool takes only its own pools' names.
        app.conf.worker_pool = PREFORK_POOL
        return run_worker(settings, concurrency, name, loglevel, extra_args, app=app)
    # Celery's threads pool ignores time limits (celery/celery#9203): a thread cannot be
    # stopped. The worker says so, once per pool that sets one (see .app).
    app.distpool_enforces_time_limits = pool != "threads"
    return run_worker(settings, concurrency, name, loglevel, [f"--pool={pool}", *extra_args],
                      app=app)


def _require_redis(settings: Settings) -> None:
    """Refuse a broker's or result store's Redis older than 6.2
    (:class:`~distpool.errors.UnsupportedRedisError`); one that cannot be reached now is
    only warned of: the workers reach it once it is back."""
    from ..brokers.celery_app import urls
    from ..brokers.profiles import REDIS, profile_for
    from ..errors import UnsupportedRedisError
    from ..redis_client import version

    broker_url, result_url = urls(settings)
    servers = [("result store", result_url)]
    if profile_for(broker_url) is REDIS:  # (RabbitMQ has no Redis version to check)
        servers.insert(0, ("broker", broker_url))
    for role, url in servers:
        try:
            version.check_url(url, role)
        except UnsupportedRedisError:
            raise
        except Exception as exc:
            logger.warning("cannot check the %s's Redis version now (%s); starting all the "
                           "same", role, exc)


def _prune_bundles() -> None:
    """Remove the bundles of the user's modules that no task needs any more from this
    machine's cache (:func:`.bundles.prune`)."""
    try:
        removed = bundles.prune()
    except Exception as exc:  # a task that needs a bundle says what is wrong, in its error
        logger.error("cannot tidy the cache of shipped modules: %s", exc)
        return
    if removed:
        logger.info("removed %d unused bundle(s) of shipped modules", len(removed))
