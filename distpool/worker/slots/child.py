"""What runs in a slot (a Celery worker of one slot, see :mod:`.parent`): its pool, and the
state file through which it tells its parent what it runs."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import signals
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.worker import state as worker_state

from ...brokers.celery_app import TASK_NAME
from ..runner import EXIT_POOL_GONE
from .state import SlotState

logger = logging.getLogger("distpool")


class SlotPool(ThreadTaskPool):  # type: ignore[misc]
    """A slot's pool (:mod:`.parent`): Celery's threads pool, run with one thread.

    The task runs in that thread, so the worker's event loop stays free to answer remote
    control (inspect, ping, revoke) and send heartbeats while it runs. Celery cannot stop a
    thread, so terminating the running task (a revoke with ``terminate=True``, which
    ``Pool.terminate()`` sends) ends the slot's process. Its parent replaces it and puts the
    message back, where it is skipped: its pool is gone.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # --max-tasks-per-child: prefork recycles a pool process, a slot its own process.
        self._tasks_left: int | None = self.options.get("maxtasksperchild")

    def on_apply(self, target: Any, args: Any = None, kwargs: Any = None,
                 callback: Any = None, accept_callback: Any = None, **options: Any) -> Any:
        def finished(result: Any) -> None:
            if self._tasks_left is not None:
                self._tasks_left -= 1
                if self._tasks_left <= 0:
                    # Celery's warm shutdown; the parent starts a fresh slot in its place.
                    # Before the acknowledgement, which lets the consumer take another
                    # message: one it takes all the same goes back (see the task).
                    self.app.distpool_retiring = True
                    worker_state.should_stop = 0
            if callback is not None:
                callback(result)  # acknowledges the message

        return super().on_apply(target, args, kwargs, finished, accept_callback, **options)

    def terminate_job(self, pid: int, signal: Any = None) -> None:
        logger.warning("terminating the running task: ending this worker process")
        os._exit(EXIT_POOL_GONE)


def report_to_parent(state: SlotState) -> None:
    """Keep a slot's state file saying which message it runs, and when that message must be
    killed (its hard time limit), for the parent in :mod:`.parent`."""

    def received(request: Any, **_: Any) -> None:
        if request.name != TASK_NAME:
            return
        hard_limit, _soft = request.time_limits
        state.running(request.id, request.message.delivery_tag,
                      None if not hard_limit else time.time() + hard_limit)

    def done(**_: Any) -> None:
        state.idle()

    state.idle()  # names the holder: the parent restores its held list if it dies
    # A slot reserves one message at a time and its one thread starts it at once:
    # "received" is "running".
    signals.task_received.connect(received, weak=False)
    signals.task_postrun.connect(done, weak=False)
    signals.task_revoked.connect(done, weak=False)
