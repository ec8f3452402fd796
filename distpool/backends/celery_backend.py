"""The Celery/Redis backend: Celery carries tasks, a Redis store carries results back.

Worker side: :func:`create_app` builds the Celery app that ``distpool worker`` runs. It
serves one generic task, whose arguments are JSON task envelopes; settings suit long tasks
(one task reserved per process, late acknowledgement, another try when a process dies).

Nothing is lost and nothing waits forever:

* a task whose worker process dies is tried again, at most ``MAX_ATTEMPTS`` times in all;
* a failure that Celery itself records (the last of those attempts, a hard time limit) goes
  through :class:`FailureReporter`, which turns it into a failure record for every task of
  the message, so the caller gets an error instead of waiting;
* on a Redis broker, a message a worker has taken stays invisible to others only while the
  worker renews its hold (:class:`_HoldRenewal`); if the whole node dies, the hold lapses and
  another worker takes the message after ``worker_lost_timeout``. A task that runs for hours
  on a live node is never handed out twice (the visibility-timeout trap of kombu's Redis
  transport, whose timeout otherwise counts from delivery and is never renewed).

Client side: :class:`CeleryBackend` publishes envelopes as ordinary Celery task messages and
pops result records from the pool's Redis list, so results stream back without polling
Celery's result backend.

Fork safety: a client never touches ``app.pool`` or kombu's global pools. Celery registers an
after-fork hook the first time they are used, and that hook can hang a
``multiprocessing`` child forked later from the same process (users mix both). The client
owns one plain connection, used by the pool's dispatcher thread alone.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import billiard.exceptions
from celery import Celery, bootsteps, signals, states
from celery.backends.base import DisabledBackend
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.worker import state as worker_state
from kombu.connection import Connection
from kombu.messaging import Producer

from .. import worker
from ..config import Settings, mask_url
from ..envelope import ResultRecord, Signer, TaskEnvelope
from ..errors import (
    AuthenticationError,
    BrokerUnavailableError,
    DistpoolError,
    EnvelopeError,
    IncompatibleEnvelopeError,
    TaskTimeoutError,
    WorkerLostError,
)
from ..slot_state import Running, SlotState
from . import kombu_redis
from .base import Backend
from .claims import Claims
from .redis_store import RedisStore, pool_of

logger = logging.getLogger("distpool")

TASK_NAME = "distpool.execute"
#: How often a worker renews its registration, and how long the registration lasts.
REGISTRATION_INTERVAL = 10.0
REGISTRATION_TTL = 3 * REGISTRATION_INTERVAL
#: Tries of a task whose worker process keeps dying, before it fails with WorkerLostError.
MAX_ATTEMPTS = 3
#: A task past its soft time limit (the pool's task_timeout) gets this long to stop before
#: its process is killed.
TIME_LIMIT_GRACE = 5.0
#: How long a worker process trusts that a pool it has seen alive still is (seconds).
LIVENESS_CACHE = 1.0
#: How often a busy worker process checks that the pool of its running task still lives.
WATCHDOG_INTERVAL = 2.0
#: The exit code of a worker process ended because the pool of the task it runs is gone.
EXIT_POOL_GONE = 70
#: A publish or a revoke that cannot reach the broker gives up after about this long.
PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                        "interval_max": 1.0}


def create_app(settings: Settings, slot_state: str | None = None,
               holder: str | None = None) -> Celery:
    """The Celery app shared by ``distpool worker`` and by clients (to build messages).
    ``slot_state``: this worker is a slot (:mod:`distpool.slots`) that reports what it runs
    in that file. ``holder``: the worker's consumer id on a Redis broker (see
    :mod:`distpool.backends.held_messages`)."""
    broker_url, result_url = _urls(settings)
    renew_every = max(1, int(settings.worker_lost_timeout / 4))
    app = Celery("distpool", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_transport=kombu_redis.TRANSPORT if kombu_redis.serves(broker_url) else None,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.worker_lost_timeout,
            "unacked_restore_interval": renew_every,
            "unacked_restore_throttle": 1,
            "distpool_holder": holder,
        },
        # Stores nothing but failures Celery records itself; see FailureReporter.
        result_backend=f"{__name__}:FailureReporter",
        task_store_errors_even_if_ignored=True,
        # Celery's own messages stay JSON: nothing on the broker is unpickled by Celery.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_default_queue=settings.queue,
        # One task per process at a time, acknowledged when done: no worker hoards tasks,
        # and a task whose process dies goes back to the queue.
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A running task survives a broker reconnection: its claim (see claims.py), not a
        # kill, keeps a second delivery of its message from running it twice.
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    runner = _ProcessLocalRunner(result_url, Signer(settings.secret),
                                 claim_ttl=settings.worker_lost_timeout,
                                 flags_redeliveries=_flags_redeliveries(broker_url))
    app.distpool_runner = runner  # for FailureReporter; kept out of app.conf, which inspect shows
    app.distpool_retiring = False  # set by a SlotPool that has run its last task

    # shared=False: a shared task (Celery's default) is also registered in every app created
    # after it, so a second pool's app would keep the first app's task and warn.
    @app.task(name=TASK_NAME, bind=True, ignore_result=True,  # type: ignore[untyped-decorator]
              shared=False, retry_on_worker_lost=True, max_retries=MAX_ATTEMPTS - 1,
              default_retry_delay=0)
    def run_distpool_tasks(task: Any, *messages: Any) -> None:
        if app.distpool_retiring:  # a slot past --max-tasks-per-child, shutting down
            raise Reject("this slot is being replaced", requeue=True)
        request = task.request
        _, soft_limit = request.timelimit or (None, None)
        # Prefork raises the soft time limit in its pool processes; a slot does it itself.
        runner.get().run(messages, request.id,
                         redelivered=bool((request.delivery_info or {}).get("redelivered")),
                         raise_soft_limit_after=soft_limit if slot_state is not None else None)

    if slot_state is not None:
        app.conf.worker_pool = f"{__name__}:SlotPool"
        _report_to_parent(SlotState(slot_state, holder or ""))

    app.steps["worker"].add(_registration_step(settings))
    if broker_url.startswith(("redis://", "rediss://")):
        app.steps["worker"].add(_hold_renewal_step(renew_every))
    return app


class SlotPool(ThreadTaskPool):  # type: ignore[misc]
    """A slot's pool (:mod:`distpool.slots`): Celery's threads pool, run with one thread.

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


class FailureReporter(DisabledBackend):  # type: ignore[misc]
    """Celery's result backend on distpool workers.

    distpool's task never raises (user errors travel as failure records), so a failure that
    reaches the result backend is one Celery recorded itself, outside the task: the worker
    process died once too often, or a hard time limit killed it. Each task of the message
    then gets a failure record, so its caller is told rather than left waiting.
    """

    def __init__(self, app: Celery, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._runner: _ProcessLocalRunner | None = getattr(app, "distpool_runner", None)

    def get_state(self, task_id: str) -> str:
        # Celery's revoke asks for every revoked id's state before it marks it revoked;
        # the disabled backend's raising here logged a warning per id per worker: 45,000
        # lines for one terminate() at 224 slots. Nothing is stored, so nothing is known.
        return states.PENDING  # type: ignore[no-any-return]

    def store_result(self, task_id: str, result: Any, state: str, traceback: Any = None,
                     request: Any = None, **kwargs: Any) -> None:
        if state != states.FAILURE or request is None or self._runner is None:
            return
        error = _translate(result, getattr(request, "retries", 0) or 0)
        self._runner.get().report_failure(getattr(request, "args", None) or (), task_id, error)


def _translate(exc: Any, retries: int) -> Exception:
    if isinstance(exc, billiard.exceptions.WorkerLostError):
        return _gave_up(retries + 1, str(exc))
    if isinstance(exc, TimeLimitExceeded):
        return _ran_out_of_time(str(exc))
    return DistpoolError(f"the worker failed the task: {exc!r}")


def _gave_up(deaths: int, detail: str) -> WorkerLostError:
    return WorkerLostError(f"the worker process running this task died {deaths} times "
                           f"({detail}); distpool gave up on it")


def _ran_out_of_time(detail: str) -> TaskTimeoutError:
    return TaskTimeoutError(
        f"the task ran past the pool's task_timeout and its process was killed ({detail})")


def _report_to_parent(state: SlotState) -> None:
    """Keep a slot's state file saying which message it runs, and when that message must be
    killed (its hard time limit), for the parent in :mod:`distpool.slots`."""

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


def _flags_redeliveries(broker_url: str) -> bool:
    """Whether every second delivery of a message through this broker says it is one.
    kombu's Redis transports set the flag on whatever they put back; RabbitMQ can lose it
    when it recovers a message across its own restart (seen: a task run twice by one slot)."""
    return broker_url.startswith(("redis://", "rediss://", "redis+socket://", "sentinel://"))


def _urls(settings: Settings) -> tuple[str, str]:
    if settings.broker_url is None or settings.result_url is None:
        raise ValueError("the Celery backend needs a broker URL and a result URL")
    return settings.broker_url, settings.result_url


class _TaskRunner:
    """Runs the task envelopes of one Celery message in a worker process."""

    def __init__(self, store: RedisStore, signer: Signer, claim_ttl: float,
                 flags_redeliveries: bool) -> None:
        self._store = store
        self._signer = signer
        self._claims = Claims(store, claim_ttl)
        self._flags_redeliveries = flags_redeliveries
        self._live_until: dict[str, float] = {}
        self._running_for: str | None = None  # the pool whose task runs now
        self._claimed: str | None = None  # the message whose claim the watchdog renews
        self._watchdog: threading.Thread | None = None

    def run(self, messages: Sequence[Any], message_id: str, redelivered: bool,
            raise_soft_limit_after: float | None) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="distpool-watchdog",
                                              daemon=True)
            self._watchdog.start()
        if not self._pool_is_live(pool_of(message_id)):
            # Before its claim, which would bring back the pool's keys once it has ended.
            logger.info("skipped message %s: its pool was terminated or its client is gone",
                        message_id)
            return
        if redelivered or not self._flags_redeliveries:
            # Someone may run it, or have run it: ask before running.
            claim = self._claims.acquire(message_id)
            if claim is None:
                return  # run, or running, elsewhere: acknowledged here, left to its holder
            interrupted, ours = claim.interrupted, _certainly
        else:
            interrupted, ours = None, self._claims.acquire_soon(message_id)
        self._claimed = message_id
        try:
            if interrupted is not None and self._given_up(messages, message_id):
                return
            records: dict[str, list[ResultRecord]] = {}
            with _SoftTimeLimit(raise_soft_limit_after):
                for message in messages:
                    outcome = self._run_one(message)
                    if outcome is not None:
                        records.setdefault(outcome[0], []).append(outcome[1])
            if not ours():
                logger.warning("message %s was also run by another process; its results "
                               "are left to that one", message_id)
                return
            # After the whole batch: if this process dies first, the message is re-queued
            # and no result of it has been delivered twice.
            self._push(records, message_id)
        finally:
            self._claimed = None

    def _push(self, records: dict[str, list[ResultRecord]], message_id: str) -> None:
        """Push the records, and mark the message's claim done with the last of them."""
        pools = list(records.items())
        for position, (pool_id, pool_records) in enumerate(pools, 1):
            self._store.push_results(
                pool_id, [record.to_bytes(self._signer, pool_id) for record in pool_records],
                finished=message_id if position == len(pools) else None)
        if not pools:
            self._store.finish(message_id)

    def _given_up(self, messages: Sequence[Any], message_id: str) -> bool:
        """Fail the tasks of a message whose earlier run was interrupted, instead of running
        them again, when it was killed for its time limit, or when this is its
        ``MAX_ATTEMPTS + 1``-th run: each earlier one claimed it and ended without finishing
        (its process died, on a slot or in a prefork pool, or its node did). Counted here,
        by the receiver, because a broker can deliver the message again before anyone else
        has noticed the death; deliveries that never began a run (a slot that put back a
        message it took while shutting down, say) do not count."""
        redeliveries, timed_out = self._store.count_redelivery(message_id)
        if timed_out:
            self.report_failure(messages, message_id, _ran_out_of_time("hard time limit"))
        elif redeliveries >= MAX_ATTEMPTS:
            self.report_failure(messages, message_id,
                                _gave_up(redeliveries, "its process exited"))
        else:
            return False
        return True

    def report_failure(self, messages: Sequence[Any], message_id: str,
                       error: Exception) -> None:
        """Fail every task of these messages (of message ``message_id``) with ``error``."""
        records: dict[str, list[ResultRecord]] = {}
        for message in messages:
            try:
                envelope = TaskEnvelope.from_wire(message, self._signer)
            except EnvelopeError:
                continue  # never run, so nothing to report
            records.setdefault(envelope.pool_id, []).append(
                worker.failure_record(envelope.task_id, error))
        self._push(records, message_id)

    def _run_one(self, message: Any) -> tuple[str, ResultRecord] | None:
        try:
            envelope = TaskEnvelope.from_wire(message, self._signer)
        except IncompatibleEnvelopeError as exc:
            logger.error("task %s of pool %s refused: %s", exc.task_id, exc.pool_id, exc)
            assert exc.pool_id is not None and exc.task_id is not None
            return exc.pool_id, worker.failure_record(exc.task_id, exc)
        except EnvelopeError as exc:
            # Not run, not loaded, not re-queued. Its caller, if it names one, is told at once.
            logger.error("refused a message: %s (pool %s, task %s)", exc, exc.pool_id,
                         exc.task_id)
            if exc.pool_id is None or exc.task_id is None:
                return None
            reason = str(exc) if isinstance(exc, AuthenticationError) else f"malformed: {exc}"
            return exc.pool_id, ResultRecord.rejection(exc.task_id, reason)
        if not self._pool_is_live(envelope.pool_id):
            logger.info("skipped task %s: its pool was terminated or its client is gone",
                        envelope.task_id)
            return None
        self._running_for = envelope.pool_id
        logger.info("task %s of pool %s started", envelope.task_id, envelope.pool_id)
        try:
            record = worker.execute(envelope)
        finally:
            self._running_for = None
        logger.info("task %s of pool %s %s in %.3f s", envelope.task_id, envelope.pool_id,
                    "succeeded" if record.ok else "failed", record.elapsed or 0.0)
        return envelope.pool_id, record

    def _watch(self) -> None:
        """Renew the running message's claim, and kill this process if the claim went to
        another process (this one was frozen past its life) or if the pool whose task it
        runs is gone (its client died, or it was terminated while this worker missed the
        revoke). Celery replaces the process and tries the message again, and that try
        finds the pool gone, or the message claimed, and skips it."""
        while True:
            time.sleep(min(WATCHDOG_INTERVAL, self._claims.renew_interval))
            message_id, pool_id = self._claimed, self._running_for
            try:
                if message_id is not None and not self._claims.renew(message_id):
                    logger.error("message %s is now run by another process; stopping it here",
                                 message_id)
                    os._exit(EXIT_POOL_GONE)
                if pool_id is None or self._pool_is_live(pool_id):
                    continue
            except Exception:  # the store is away: not a reason to kill a task
                continue
            if self._running_for == pool_id:
                logger.warning("pool %s is gone; stopping its running task", pool_id)
                os._exit(EXIT_POOL_GONE)  # at once, as SIGKILL would, but on Windows too

    def _pool_is_live(self, pool_id: str) -> bool:
        # Asked at most once a second per pool: terminate() also revokes every message of
        # the pool by id, so the key matters for workers that missed that broadcast and for
        # clients that died, where a second's delay is of no consequence.
        now = time.monotonic()
        if self._live_until.get(pool_id, 0.0) > now:
            return True
        live = self._store.pool_is_live(pool_id)
        if live:
            if len(self._live_until) > 1024:
                self._live_until.clear()
            self._live_until[pool_id] = now + LIVENESS_CACHE
        return live


def _certainly() -> bool:
    return True


class _SoftTimeLimit:
    """Raises ``SoftTimeLimitExceeded`` in the running task after ``seconds`` (None: never),
    as Celery's prefork pool does in its pool processes; a slot must do it itself.

    Prefork raises it with a signal, but a slot's task runs in a thread of its own, and
    signals reach only the main thread. A timer raises it asynchronously in the task's
    thread instead, which takes effect when the task next runs Python code: a task blocked
    in one long call (``time.sleep``, a C extension) is stopped by the hard limit instead.
    """

    def __init__(self, seconds: float | None) -> None:
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        self._armed = seconds is not None
        self._timer = None if seconds is None else threading.Timer(seconds, self._fire)

    def __enter__(self) -> None:
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()

    def __exit__(self, *_: object) -> None:
        if self._timer is not None:
            with self._lock:
                self._armed = False
            self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:  # never once __exit__ has disarmed it
            if self._armed:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._thread), ctypes.py_object(SoftTimeLimitExceeded))


class _ProcessLocalRunner:
    """One task runner, and one result store, per worker process: the registration step,
    the runner and its watchdog share the store's connection."""

    def __init__(self, url: str, signer: Signer, claim_ttl: float,
                 flags_redeliveries: bool) -> None:
        self._url = url
        self._signer = signer
        self._claim_ttl = claim_ttl
        self._flags_redeliveries = flags_redeliveries
        self._pid: int | None = None
        self._store: RedisStore | None = None
        self._runner: _TaskRunner | None = None

    def get(self) -> _TaskRunner:
        store = self.store()  # forgets an inherited runner too
        if self._runner is None:
            self._runner = _TaskRunner(store, self._signer, self._claim_ttl,
                                       self._flags_redeliveries)
        return self._runner

    def store(self) -> RedisStore:
        if self._store is None or self._pid != os.getpid():
            # Never one inherited through a fork: its connection is the parent's.
            self._store = RedisStore(self._url)
            self._runner = None
            self._pid = os.getpid()
        return self._store


def _registration_step(settings: Settings) -> type:
    """A worker bootstep that keeps the worker registered, with its slots, in the store."""

    _, result_url = _urls(settings)

    class Registration(bootsteps.StartStopStep):  # type: ignore[misc]
        label = "distpool registration"

        def __init__(self, w: Any, **kwargs: Any) -> None:
            super().__init__(w, **kwargs)
            self._store = w.app.distpool_runner.store()
            self._timer: Any = None

        def start(self, w: Any) -> None:
            self._register(w)
            self._timer = w.timer.call_repeatedly(REGISTRATION_INTERVAL, self._register, (w,))

        def stop(self, w: Any) -> None:
            if self._timer is not None:
                self._timer.cancel()
            try:
                self._store.unregister_worker(settings.queue, w.hostname)
            except Exception as exc:  # the store may be gone at shutdown; it expires anyway
                logger.warning("could not unregister %s: %s", w.hostname, exc)

        def _register(self, w: Any) -> None:
            try:
                self._store.register_worker(settings.queue, w.hostname, w.concurrency,
                                            REGISTRATION_TTL)
            except Exception as exc:
                logger.warning("could not register %s in %s: %s", w.hostname,
                               mask_url(result_url), exc)

    return Registration


def _hold_renewal_step(interval: int) -> type:
    """A worker bootstep that keeps renewing its hold on the messages it has taken."""

    class _HoldRenewal(bootsteps.StartStopStep):  # type: ignore[misc]
        """kombu's Redis transport records each delivered, unacknowledged message in the
        ``unacked_index`` sorted set with its delivery time, and gives it to another worker
        once that is older than the visibility timeout. Setting the time to now, for every
        message this node holds, keeps them while the node lives. It goes through the task
        consumer's own channel: no connection of its own, and the channel's key names and
        connection settings (TLS, key prefix) whatever they are."""

        label = "distpool hold renewal"

        def __init__(self, w: Any, **kwargs: Any) -> None:
            super().__init__(w, **kwargs)
            self._timer: Any = None

        def start(self, w: Any) -> None:
            self._timer = w.timer.call_repeatedly(interval, self._renew, (w,))

        def stop(self, w: Any) -> None:
            if self._timer is not None:
                self._timer.cancel()

        def _renew(self, w: Any) -> None:
            held = list(worker_state.active_requests) + list(worker_state.reserved_requests)
            tags = {request.message.delivery_tag for request in held}
            tags.discard(None)
            consumer = getattr(w.consumer, "task_consumer", None)
            if not tags or consumer is None:  # nothing held, or reconnecting
                return
            now = time.time()
            channel = consumer.channel
            try:
                with channel.conn_or_acquire() as client:
                    client.zadd(channel.unacked_index_key, {tag: now for tag in tags}, xx=True)
            except Exception as exc:  # the broker is away: Celery reconnects on its own
                logger.warning("could not renew the hold on %d messages: %s", len(tags), exc)

    return _HoldRenewal


class SlotRecovery:
    """What the parent of slots (:mod:`distpool.slots`) does with the message of a slot that
    died, or that it kills for running past the message's hard time limit.

    A timed-out message is marked so in the store before its slot is killed, so whichever
    worker receives it next fails its tasks with ``TaskTimeoutError`` instead of running
    them (:meth:`_TaskRunner._given_up`). On Redis the message of a slot that is gone goes
    back to the head of the queue at once, as kombu does when a worker rejects a message;
    otherwise it would wait for the dead slot's hold to lapse (``worker_lost_timeout``). On
    AMQP the broker re-queues it itself when the slot's connection drops.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        broker_url, self._result_url = _urls(settings)
        self._restores = kombu_redis.serves(broker_url)
        # Made on first use, not before the slots are forked.
        self._store: RedisStore | None = None
        self._connection: Connection | None = None

    def timed_out(self, running: Running) -> None:
        try:
            if self._store is None:
                self._store = RedisStore(self._result_url)
            self._store.mark_timed_out(running.message_id)
        except Exception as exc:  # then it runs again, and times out again
            logger.error("could not mark message %s as timed out: %s", running.message_id, exc)

    def requeue(self, running: Running) -> None:
        if not self._restores:
            return
        try:
            self._channel().qos.restore_by_tag(running.delivery_tag)
        except Exception as exc:  # the message's hold lapses after worker_lost_timeout
            logger.error("could not put message %s back on the queue: %s",
                         running.message_id, exc)

    def release(self, holder: str) -> None:
        """Put back what the dead slot ``holder`` had taken from the queue and not yet
        recorded as delivered (on Redis; AMQP re-queues it when the connection drops)."""
        if not self._restores:
            return
        try:
            self._channel().restore_held(holder)
        except Exception as exc:  # its lease lapses after worker_lost_timeout
            logger.error("could not put back the messages held by %s: %s", holder, exc)

    def _channel(self) -> Any:
        if self._connection is None:
            self._connection = create_app(self._settings).connection_for_write()
        return self._connection.default_channel


class CeleryBackend(Backend):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._signer = Signer(settings.secret)
        broker_url, result_url = _urls(settings)
        self._app = _client_app(settings)
        self._queue = self._app.amqp.queues[settings.queue]
        self._send = self._app.amqp.send_task_message
        self._store = RedisStore(result_url)
        self._connection: Connection = self._app.connection_for_write()
        self._producer: Producer | None = None
        # A Redis queue needs no declaring before messages are pushed onto it, and kombu's
        # check that it was declared copies and binds the queue object on every publish.
        self._declare: list[Any] | None = [] if kombu_redis.serves(broker_url) else None
        try:
            self._store.ping()
        except Exception as exc:
            raise BrokerUnavailableError(
                f"cannot reach the result store at {mask_url(result_url)}: {exc}"
            ) from None
        try:
            self._connection.ensure_connection(max_retries=2, interval_start=0.5,
                                               interval_step=0.5, timeout=5)
        except Exception as exc:
            raise BrokerUnavailableError(
                f"cannot reach the broker at {mask_url(broker_url)}: {exc}"
            ) from None

    @property
    def signer(self) -> Signer:
        return self._signer

    def worker_slots(self) -> int:
        return self._store.worker_slots(self._settings.queue)

    def refresh_pool(self, pool_id: str, info: dict[str, Any]) -> bool:
        return self._store.refresh_pool(pool_id, self._settings.pool_ttl, info)

    def publish(self, messages: Sequence[Sequence[TaskEnvelope]]) -> None:
        if self._producer is None:
            self._producer = Producer(self._connection)  # type: ignore[no-untyped-call]
        timeout = self._settings.task_timeout
        for envelopes in messages:
            first = envelopes[0].task_id
            described = first if len(envelopes) == 1 else f"{first} and {len(envelopes) - 1} more"
            # The soft limit raises in the task, the hard one kills its process.
            soft = None if timeout is None else timeout * len(envelopes)
            message = self._app.amqp.as_task_v2(
                first, TASK_NAME,
                args=tuple(envelope.to_wire(self._signer) for envelope in envelopes),
                argsrepr=f"<distpool task {described}>", kwargsrepr="{}", ignore_result=True,
                soft_time_limit=soft, time_limit=None if soft is None else soft + TIME_LIMIT_GRACE,
            )
            self._send(self._producer, TASK_NAME, message, queue=self._queue,
                       declare=self._declare, retry=True, retry_policy=PUBLISH_RETRY_POLICY)

    def fetch_results(self, pool_id: str, timeout: float) -> list[bytes]:
        return self._store.pop_results(pool_id, timeout)

    def message_states(self, pool_id: str, message_ids: Sequence[str]) -> list[str | None]:
        return self._store.message_states(pool_id, list(message_ids))

    def wake(self, pool_id: str) -> None:
        self._store.wake(pool_id)

    def cancel(self, pool_id: str, message_ids: Iterable[str]) -> None:
        # First the liveness key: every worker then skips the pool's queued tasks, even a
        # worker that starts later and never hears the revoke broadcast.
        self._store.close_pool(pool_id)
        ids = list(message_ids)
        if ids:
            with self._app.connection_for_write() as connection:
                self._app.control.revoke(ids, connection=connection, terminate=True,
                                         signal="SIGKILL")

    def close_pool(self, pool_id: str) -> None:
        self._store.close_pool(pool_id)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.release()  # type: ignore[no-untyped-call]
        self._connection.release()  # type: ignore[no-untyped-call]
        self._store.close()


@functools.lru_cache(maxsize=8)
def _client_app(settings: Settings) -> Celery:
    """The app a client builds its messages with, shared by the pools of a process that have
    the same settings. Building one, with its queues and task sender, took about 1.5 ms of
    each ``Pool()`` on running workers; it holds no connection (each pool has its own)."""
    return create_app(settings)


def cluster_status(settings: Settings, timeout: float = 1.0) -> dict[str, Any]:
    """What ``distpool status`` shows: the queue's workers (with their slots and busy
    processes), its depth, and the pools with work in flight."""
    broker_url, result_url = _urls(settings)
    app = create_app(settings)
    store = RedisStore(result_url)
    try:
        registered = store.workers(settings.queue)
        pools = store.pools()
        with app.connection_for_write() as connection:
            answers = app.control.inspect(timeout=timeout, connection=connection).active()
            try:
                _, depth, _ = connection.default_channel.queue_declare(
                    queue=settings.queue, passive=True)
            except Exception:  # an AMQP queue that was never declared
                depth = 0
    finally:
        store.close()
    answers = answers or {}
    workers = [
        {"name": name, "host": name.partition("@")[2], "slots": slots,
         "busy": len(answers[name]) if name in answers else None,
         "answering": name in answers}
        for name, slots in sorted(registered.items())]
    return {"broker": mask_url(broker_url), "queue": settings.queue, "queue_depth": depth,
            "workers": workers,
            "pools": [{"id": pool_id, **info} for pool_id, info in sorted(pools.items())]}


def run_worker(settings: Settings, concurrency: int, name: str, loglevel: str,
               extra_args: Sequence[str] = (), slot_state: str | None = None) -> int:
    """Run ``celery worker`` for distpool in this process until it is stopped."""
    app = create_app(settings, slot_state,
                     holder=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    argv = [
        "worker",
        f"--queues={settings.queue}",
        f"--concurrency={concurrency}",
        f"--hostname={name}",
        f"--loglevel={loglevel}",
        # Gossip and mingle are for features distpool does not use; they cost a second at
        # start. Remote control (inspect, revoke) and events (-E, Flower) still work.
        "--without-gossip",
        "--without-mingle",
        *extra_args,
    ]
    app.worker_main(argv=argv)
    return 0
