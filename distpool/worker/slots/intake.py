"""How a slot takes and runs its messages on a Redis broker: a consumer of its own, beside
Celery's.

A slot is a Celery worker (:mod:`.child`). On a Redis broker, and unless events are asked
for (``-E``), its Celery consumer serves the slot's remote control, its heartbeats and its
timers, and consumes no queue; the slot's task thread, :class:`Intake`, takes the messages
itself, one at a time, and runs each in turn:

1. **Take**: move the next message into the slot's held list and parse it
   (:class:`~distpool.brokers.redis_consumer.HeldQueue`); what is not a message is dropped,
   with a log line.
2. **Register**: a Celery request for the message, reserved and accepted in Celery's worker
   state, so that ``inspect active`` shows it and a revoke with ``terminate`` ends the slot
   (:meth:`.child.SlotPool.terminate_job`), as under Celery's consumer; the slot's state file
   names it, with its hard time limit, for the parent (:mod:`.state`).
3. **Run**: the body of distpool's task (``app.distpool_run_message``: claim, run, push the
   results).
4. **Done**: out of the held list, sent with the next take.

Celery's consumer did the same through kombu's delivery records, its strategy, the hand-off
to the pool's thread, its tracer and the acknowledgement back through its event loop: most
of a slot's CPU per message (``benchmarks/consumer_floor.py`` measures it). The
takes renew the held list's lease; while a message runs, the Celery consumer's timer does
(:func:`~distpool.brokers.held_messages.renew_lease`), and it sweeps the lapsed holds of dead
consumers (the transport's QoS) as kombu's loop would.

Stopping. A warm shutdown (the node stops, the slot retires) ends the take under way at
once, puts back what the held list holds, and waits for the running message, as Celery
waits for its pool. A slot that retires stops taking messages before it asks Celery for
the shutdown.

Its log lines are Celery's (``Task <function>[<id>] received``, ``succeeded in``), from
Celery's loggers. Not under this consumer: task events (``-E``, for Flower: the slot then
consumes through Celery, as before), and the ``active_queues``, ``add_consumer`` and
``cancel_consumer`` remote controls, which see no queue.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from celery import Celery, bootsteps, signals
from celery.app import trace
from celery.exceptions import InvalidTaskError
from celery.worker import state as worker_state
from kombu.message import Message

from ...brokers import held_messages
from ...brokers.celery_app import IDLE_WAIT, TASK_NAME, hold_renewal_interval
from ...brokers.redis_consumer import HeldQueue, parse
from ...config import Settings
from ...retry import RetryPolicy
from ..failures import translate
from .retirement import Retirement
from .state import SlotState

logger = logging.getLogger("distpool")
#: Where Celery logs a task's arrival and its success, which a slot's log keeps saying.
RECEIVED_LOGGER = logging.getLogger("celery.worker.strategy")
SUCCESS_LOGGER = logging.getLogger("celery.app.trace")

#: How long the intake waits before taking again after its connection failed.
TAKE_RETRY = RetryPolicy(retries=0, base=0.1, cap=5.0)


class Intake:
    """A slot's own consumer: takes its messages and runs them, in a thread of its own."""

    def __init__(self, app: Celery, queue: HeldQueue, state: SlotState, hostname: str,
                 retirement: Retirement, wait: int) -> None:
        """``wait``: how long a take waits for a message (seconds), well within the held
        list's lease, which each take renews."""
        self._app = app
        self._wait = wait
        self._task = app.tasks[TASK_NAME]
        self._queue = queue
        self._state = state
        self._hostname = hostname
        self._retirement = retirement
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._consume, name="distpool-intake")
        #: Whether a message runs now: the held list's lease is then renewed by the Celery
        #: consumer's timer, as its takes renew it otherwise.
        self.running = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Take no more messages; the running one ends first (see :meth:`join`)."""
        self._stopping.set()
        self._queue.interrupt()

    def join(self) -> None:
        self._thread.join()

    def _consume(self) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    item = self._queue.take(self._wait)
                    if item is not None and not self._handle(item):
                        break
                except Exception as exc:  # Redis is away: what is held goes back first
                    if self._stopping.is_set():
                        break
                    failures += 1
                    logger.warning("could not take a message from %s (%d time(s) in a "
                                   "row): %s", self._queue.queue, failures, exc)
                    self._stopping.wait(TAKE_RETRY.delay(failures))
                    continue
                failures = 0
        finally:
            self._queue.close()

    def _handle(self, item: bytes) -> bool:
        """Run the message ``item``; False once this slot takes no more."""
        message = parse(item)
        request = (self._request(message) if message is not None
                   and message["headers"].get("task") == TASK_NAME else None)
        if request is None:
            logger.error("dropped an item of queue %s that is not a distpool message: %r",
                         self._queue.queue, item[:200])
            self._queue.drop(item)
            return True
        if request.id in worker_state.revoked:
            logger.info("skipped message %s: revoked", request.id)
            self._queue.done(item)
            return True
        unrun = self._run(request)
        if unrun:
            self._queue.put_back(item)
        else:
            self._queue.done(item)
        return not self._retirement.message_done()  # then it takes no other

    def _request(self, message: dict[str, Any]) -> Any:
        """A Celery request for ``message``, as Celery's consumer would make it, or None if
        its body is not a task's (arguments, keyword arguments, embedded options)."""
        try:
            args, kwargs, embed = json.loads(message["body"])
            if not (isinstance(args, list) and isinstance(kwargs, dict)
                    and isinstance(embed, dict)
                    and isinstance(message["headers"].get("id"), str)):
                return None
            properties = message["properties"]
            carrier = Message(  # type: ignore[no-untyped-call]
                body=message["body"], delivery_tag=properties.get("delivery_tag"),
                content_type=message.get("content-type"),
                content_encoding=message.get("content-encoding"),
                delivery_info=properties["delivery_info"], properties=properties,
                headers=message["headers"])
            return self._task.Request(carrier, app=self._app, hostname=self._hostname,
                                      task=self._task, connection_errors=(),
                                      body=(args, kwargs, embed), decoded=True)
        except (ValueError, RecursionError, TypeError, KeyError, InvalidTaskError):
            return None

    def _run(self, request: Any) -> bool:
        """Run the message of ``request``; True if it goes back on the queue unrun."""
        _log_info(RECEIVED_LOGGER, trace.LOG_RECEIVED, request, args=request.argsrepr,
                  kwargs=request.kwargsrepr, eta=None)
        worker_state.task_reserved(request)
        self.running = True
        started = time.monotonic()
        request.on_accepted(os.getpid(), started)  # inspect active; terminate
        messages = list(request.args)
        try:
            hard_limit = request.time_limits[0]
            self._state.running(request.id, str(request.message.delivery_tag or request.id),
                                time.time() + hard_limit if hard_limit else None)
            ran = self._app.distpool_run_message(
                messages, request.id, request.request_dict.get("timelimit"),
                request.delivery_info)
            if ran:
                _log_info(SUCCESS_LOGGER, trace.LOG_SUCCESS, request, return_value=None,
                          runtime=time.monotonic() - started)
            return not ran
        except Exception as exc:  # as Celery's tracer: each task of the message fails
            logger.exception("message %s: distpool's task failed", request.id)
            try:
                self._app.distpool_runner.get().report_failure(messages, request.id,
                                                               translate(exc, 0))
            except Exception:
                logger.exception("message %s: could not report its failure", request.id)
            return False
        finally:
            worker_state.task_ready(request)
            self._state.idle()
            self.running = False

def _log_info(to: logging.Logger, template: str, request: Any, **context: Any) -> None:
    """Log as Celery does: ``template`` filled with ``context``, the request's id and name
    (the user's function's, see :mod:`distpool.worker.app`), also passed as ``data``."""
    if to.isEnabledFor(logging.INFO):
        context = {"id": request.id, "name": request.name, **context}
        to.info(template, context, extra={"data": context})


def intake_step(settings: Settings, url: str, state: SlotState, holder: str) -> type:
    """A consumer bootstep that runs the slot's :class:`Intake` on the queue of ``settings``
    at the Redis broker ``url``, and keeps its held list's lease and the sweeps on the
    Celery consumer's timer."""

    class _Intake(bootsteps.StartStopStep):  # type: ignore[misc]
        label = "distpool intake"
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, c: Any, **kwargs: Any) -> None:
            super().__init__(c, **kwargs)
            self._intake: Intake | None = None
            self._timers: list[Any] = []

        def start(self, c: Any) -> None:
            # Again after each reconnection of Celery's: the timers go with the connection,
            # the intake (on a connection of its own) lives on.
            channel = c.task_consumer.channel
            # The connection kombu opened for the channel's blocking waits, and pinged: idle
            # for good, Celery's consumer consuming no queue. Closed, it keeps a slot within
            # its budget of connections (docs/deploying.md).
            channel.async_pool.disconnect()
            self._timers = [
                c.timer.call_repeatedly(hold_renewal_interval(settings), self._renew_lease,
                                        (channel,)),
                c.timer.call_repeatedly(channel.unacked_restore_interval, self._sweep,
                                        (channel,))]
            if self._intake is None:
                queue = HeldQueue(url, settings.queue, holder, settings.worker_lost_timeout)
                retirement = Retirement(c.app, c.pool.options.get("maxtasksperchild"))
                self._intake = Intake(c.app, queue, state, c.hostname, retirement,
                                      wait=min(IDLE_WAIT, hold_renewal_interval(settings)))
                self._intake.start()
                # At the warm shutdown's first moment, not once Celery has stopped the rest.
                signals.worker_shutting_down.connect(self._take_no_more, weak=False)

        def stop(self, c: Any) -> None:
            for timer in self._timers:
                timer.cancel()
            self._timers = []

        def shutdown(self, c: Any) -> None:
            self.stop(c)
            if self._intake is not None:
                self._intake.stop()
                self._intake.join()

        def _take_no_more(self, **_: Any) -> None:
            if self._intake is not None:
                self._intake.stop()

        def _renew_lease(self, channel: Any) -> None:
            if self._intake is None or not self._intake.running:
                return  # its takes renew it
            try:
                with channel.conn_or_acquire() as client:
                    held_messages.renew_lease(client, holder, settings.worker_lost_timeout)
            except Exception as exc:  # Celery reconnects; the lease outlasts a few misses
                logger.warning("could not renew the lease of %s: %s", holder, exc)

        def _sweep(self, channel: Any) -> None:
            try:
                channel.qos.restore_visible(num=channel.unacked_restore_limit,
                                            interval=channel.unacked_restore_throttle)
            except Exception as exc:
                logger.warning("could not sweep for lapsed holds: %s", exc)

    return _Intake
