"""Celery's prefork pool as ``distpool worker --pool prefork`` runs it (POSIX only).

One change: terminating a task (``Pool.terminate()`` revokes its messages with
``terminate=True``) kills the pool process outright, whatever signal the revoke names. The
revoke names SIGTERM, the one signal every platform has (see
:func:`distpool.brokers.celery_app.revoke`), but a pool process handles SIGTERM in Python
(billiard raises ``SystemExit`` there), which a task running native code that holds the GIL
never lets run: the task would go on after ``terminate()`` returned.
"""

from __future__ import annotations

from typing import Any

from celery.concurrency.prefork import TaskPool

from ..platform import KILL

#: The value of Celery's ``worker_pool`` setting that selects this pool.
POOL = f"{__name__}:PreforkPool"


class PreforkPool(TaskPool):  # type: ignore[misc]
    """Celery's prefork pool, which terminates a task by killing its process."""

    def on_start(self) -> None:
        super().on_start()
        # (prefork's on_start binds terminate_job to billiard's pool, per instance)
        kill_job = self._pool.terminate_job

        def terminate_job(pid: int, signal: Any = None) -> None:
            kill_job(pid, KILL)

        self.terminate_job = terminate_job
