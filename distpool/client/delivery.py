"""A pool's result-delivery thread, as ``multiprocessing.pool``'s result handler.

The collector thread pops, authenticates and accounts for results; loading their payloads
and completing the result objects, whose callbacks are user code, happen here, one at a time
in the order queued (completion order). So a slow callback delays the other callbacks, as in
multiprocessing, but never the collector's liveness refresh.

A *quiet* delivery (a result without callbacks or progress display: it only loads the
payload and wakes waiters) that would wait for nothing is made at once on the thread that
offers it: the same order, without a thread hop, which a sequential ``apply`` would feel.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

from .. import platform
from ..errors import add_note
from ..wire import serialization
from ..wire.payload import Payload
from .results import JobResult

logger = logging.getLogger("distpool")

Action = Callable[[], object]


class Delivery:
    def __init__(self, pool_id: str) -> None:
        self._pool_id = pool_id
        # SimpleQueue: the cheapest hand-off there is, and a sequential apply waits on it.
        self._queue: queue.SimpleQueue[Action | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0  # queued or running
        self._dropping = False
        self.thread = threading.Thread(target=self._run, name=f"distpool-delivery-{pool_id[:8]}",
                                       daemon=True)
        self.thread.start()

    def put(self, action: Action, quiet: bool = False) -> None:
        """Run ``action`` after what is queued already: on the delivery thread, or right
        here if it is ``quiet`` and nothing is queued or running."""
        with self._lock:
            inline = quiet and not self._pending
            if not inline:
                self._pending += 1
        if not inline:
            self._queue.put(action)
            return
        try:
            action()
        except Exception:
            logger.exception("pool %s: could not deliver a result", self._pool_id)

    def stop(self, drop: bool = False) -> None:
        """End the thread once it has run what is queued; with ``drop``, without running it
        (terminate has failed those results already)."""
        if drop:
            self._dropping = True
        self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not threading.current_thread():  # stopped from a callback
            platform.joined(self.thread, timeout)

    def _run(self) -> None:
        while True:
            action = self._queue.get()
            if action is None:
                return
            try:
                if not self._dropping:
                    action()
            except BaseException:  # even SystemExit from a callback: later results still come
                logger.exception("pool %s: a result callback raised", self._pool_id)
            # Not kept while waiting for the next: the result it delivered is the caller's.
            del action
            with self._lock:
                self._pending -= 1


def deliver(result: JobResult, index: int, ok: bool, value: Any,
            payload: Payload | Callable[[], Payload] | None, task_id: str) -> None:
    """Hand the outcome of chunk ``index`` to its result object: ``value``, or what the
    authenticated ``payload`` holds (or its fetch returns: a result that came as a blob,
    read here, as late as can be, so the collector never waits on it). ``task_id``, its
    wire name, is for error messages."""
    if payload is None:
        result.set_outcome(index, ok, value)
        return
    try:
        value = serialization.loads(payload if isinstance(payload, Payload) else payload())
        if not ok:
            error, remote_traceback = value
            error.__cause__ = result.remote_traceback(remote_traceback)
            value = error
    except Exception as exc:
        ok, value = False, exc
        add_note(exc, f"distpool could not load the result of task {task_id}")
    result.set_outcome(index, ok, value)
