"""Transports between a pool and the workers that run its tasks.

:class:`~distpool.backends.base.Backend` is what the pool's engine talks to. Two implement it:
the Celery/Redis backend for real clusters, and the in-process eager backend for tests.
Both hand tasks to :func:`distpool.worker.execute.execute`.
"""

from __future__ import annotations

from ..config import Settings
from .base import Backend


def connect(settings: Settings) -> Backend:
    """The backend the settings call for; the Celery one is imported only when needed.

    Raises :class:`~distpool.errors.SecretKeyMissingError` for a broker without a key,
    unless the settings say to run insecure.
    """
    if settings.eager:
        from .eager import EagerBackend

        return EagerBackend(settings.secret)
    settings.require_secret()
    from .celery import CeleryBackend

    return CeleryBackend(settings)


__all__ = ["Backend", "connect"]
