"""When a slot ends itself: once a pool's ``maxtasksperchild`` has run out in its process, or
after the node's ``--max-tasks-per-child`` messages (see :mod:`.child`, Retiring). Counted
alike whichever consumer took the messages, Celery's (:class:`.child.SlotPool`) or the slot's
own (:mod:`.intake`)."""

from __future__ import annotations

from celery import Celery
from celery.worker import state as worker_state

from .. import execute


class Retirement:
    """Counts the messages a slot of ``app`` has run, at most ``max_tasks`` (None: no limit
    of the node's)."""

    def __init__(self, app: Celery, max_tasks: int | None) -> None:
        self._app = app
        self._left = max_tasks

    def message_done(self) -> bool:
        """Count a message run; if it was the slot's last, ask Celery for a warm shutdown (the
        parent starts a fresh slot in its place) and return True."""
        if self._left is not None:
            self._left -= 1
        if not (execute.spent() or (self._left is not None and self._left <= 0)):
            return False
        self._app.distpool_retiring = True
        worker_state.should_stop = 0
        return True
