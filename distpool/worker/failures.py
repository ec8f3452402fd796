"""Failures that Celery records itself, outside distpool's task, turned into failure records.

distpool's task never raises (user errors travel as failure records), so a failure that
reaches Celery's result backend is one Celery recorded itself: the worker process died once
too often, or a hard time limit killed it. Each task of the message then gets a failure
record, so its caller is told rather than left waiting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import billiard.exceptions
from celery import Celery, states
from celery.backends.base import DisabledBackend
from celery.exceptions import TimeLimitExceeded

from ..errors import DistpoolError, TaskTimeoutError, WorkerLostError

if TYPE_CHECKING:
    from .runner import ProcessLocalRunner


class FailureReporter(DisabledBackend):  # type: ignore[misc]
    """Celery's result backend on distpool workers: stores nothing but the failures Celery
    records itself, as failure records of the message's tasks."""

    def __init__(self, app: Celery, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._runner: ProcessLocalRunner | None = getattr(app, "distpool_runner", None)

    def get_state(self, task_id: str) -> str:
        # Celery's revoke asks for every revoked id's state before it marks it revoked;
        # the disabled backend's raising here logged a warning per id per worker: 45,000
        # lines for one terminate() at 224 slots. Nothing is stored, so nothing is known.
        return states.PENDING  # type: ignore[no-any-return]

    def store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                     request: Any = None, **kwargs: Any) -> None:
        if state != states.FAILURE or request is None or self._runner is None:
            return
        error = translate(result, getattr(request, "retries", 0) or 0)
        self._runner.get().report_failure(getattr(request, "args", None) or (), task_id, error)


def translate(exc: Any, retries: int) -> Exception:
    if isinstance(exc, billiard.exceptions.WorkerLostError):
        return gave_up(retries + 1, str(exc))
    if isinstance(exc, TimeLimitExceeded):
        return ran_out_of_time(str(exc))
    return DistpoolError(f"the worker failed the task: {exc!r}")


def gave_up(deaths: int, detail: str) -> WorkerLostError:
    return WorkerLostError(f"the worker process running this task died {deaths} times "
                           f"({detail}); distpool gave up on it")


def ran_out_of_time(detail: str) -> TaskTimeoutError:
    return TaskTimeoutError(
        f"the task ran past the pool's task_timeout and its process was killed ({detail})")
