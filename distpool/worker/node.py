"""Running a worker node: :func:`run`, which ``distpool worker`` calls, and which chooses the
process model.

* The slots (:mod:`.slots`), the default, and for ``--pool solo``, the model's earlier name:
  one Celery worker process of one slot each, under a parent that replaces them.
* Any other Celery pool (``--pool prefork``, ``threads``, ...): Celery's own worker, run in
  this process by :func:`.app.run_worker`.

A new process model is one more branch here, and a package of its own beside :mod:`.slots`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from ..config import Settings
from . import bundles
from .app import run_worker
from .slots.parent import run_slots

logger = logging.getLogger("distpool")

#: The ``--pool`` values that choose the slots: none given, or the model's earlier name.
SLOT_POOLS = (None, "solo")


def run(settings: Settings, *, concurrency: int | None = None, name: str | None = None,
        loglevel: str = "WARNING", extra_args: Sequence[str] = (),
        pool: str | None = None) -> int:
    """Run a worker node serving ``settings.queue`` until it is stopped (SIGTERM, Ctrl-C);
    return its exit status.

    ``concurrency``: tasks at a time (default: the CPU count). ``name``: the Celery node
    name, Celery's ``%h`` placeholders allowed (default ``distpool-<pid>@%h``; slot ``i`` of
    the slots model is ``<node>-<i>@<host>``). ``loglevel``: of the workers, and of the slots'
    parent. ``extra_args``: ``celery worker`` options, passed on unchanged (to every slot).
    ``pool``: Celery's ``--pool``, which chooses the process model (see above).

    Raises :class:`~distpool.errors.SecretKeyMissingError` before starting anything if
    ``settings`` has no key and is not ``insecure``.
    """
    settings.require_secret()  # once, here: the slots do not check it again
    if concurrency is None:
        concurrency = os.cpu_count() or 1
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    name = name or f"distpool-{os.getpid()}@%h"
    _prune_bundles()
    if pool in SLOT_POOLS:
        return run_slots(settings, concurrency, name, loglevel, extra_args)
    return run_worker(settings, concurrency, name, loglevel, [f"--pool={pool}", *extra_args])


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
