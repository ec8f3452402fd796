"""Runs the task envelopes of a Celery message in a worker process: the only caller of
:func:`distpool.worker.execute.execute` on a real cluster.

Nothing is lost and nothing runs twice:

* the runner claims each message before running it (:mod:`.claims`) and renews the claim
  while it runs, so a second delivery of a message whose holder lives is not run again;
* a message whose earlier run was interrupted (its process died) is run again, at most
  ``MAX_ATTEMPTS`` times in all, then fails with ``WorkerLostError``;
* a watchdog thread stops the running task when its pool is gone (terminated, or its client
  died) or its claim went to another process;
* a message whose tasks need a version of the user's module other than the one this process
  imported is not claimed (:class:`~distpool.errors.ModuleConflictError`), so that a fresh
  process can take it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from ..errors import (
    AuthenticationError,
    EnvelopeError,
    IncompatibleEnvelopeError,
    PayloadTooLargeError,
)
from ..store.keys import pool_of, result_blob
from ..store.redis_store import RedisStore
from ..wire.envelope import ResultRecord, TaskEnvelope
from ..wire.payload import RESULT_INLINE_LIMIT, BlobRef, Payload
from ..wire.signing import Signer
from . import bundles, execute
from .claims import Claims, Renewal
from .failures import gave_up, ran_out_of_time

logger = logging.getLogger("distpool")

#: Tries of a task whose worker process keeps dying, before it fails with WorkerLostError.
MAX_ATTEMPTS = 3
#: How long a worker process trusts that a pool it has seen alive still is (seconds).
LIVENESS_CACHE = 1.0
#: How often a busy worker process checks that the pool of its running task still lives.
WATCHDOG_INTERVAL = 2.0
#: The exit code of a worker process ended because the pool of the task it runs is gone.
EXIT_POOL_GONE = 70


class TaskRunner:
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
        self._finishing: str | None = None  # the last message whose results were pushed
        self._watchdog: threading.Thread | None = None

    def run(self, messages: Sequence[Any], message_id: str, redelivered: bool,
            raise_soft_limit_after: float | None) -> None:
        """Run the message's tasks and push their results. Raises
        :class:`~distpool.errors.ModuleConflictError`, before it claims the message, if this
        process cannot load the user's modules its tasks need."""
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="distpool-watchdog",
                                              daemon=True)
            self._watchdog.start()
        if not self._pool_is_live(pool_of(message_id)):
            # Before its claim, which would bring back the pool's keys once it has ended.
            logger.info("skipped message %s: its pool was terminated or its client is gone",
                        message_id)
            return
        parsed = [self._parse(message) for message in messages]
        for item in parsed:
            if isinstance(item, TaskEnvelope) and item.bundles:
                problem = bundles.conflict(item.bundle_refs())
                if problem is not None:
                    raise problem
        ours: Callable[[], bool | None]
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
                for item in parsed:
                    outcome = self._run_one(item) if isinstance(item, TaskEnvelope) else item
                    if outcome is not None:
                        records.setdefault(outcome[0], []).append(outcome[1])
            # After the whole batch: if this process dies first, the message is re-queued
            # and no result of it has been delivered twice.
            self._finishing = message_id
            if ours is not _certainly and records:
                # A claim sent without waiting is checked by the push itself, in Redis, rather
                # than by its reply first: a round trip less on every short task's way.
                if self._push(records, message_id, while_held_by=self._claims.holder):
                    return
                # Not held now (taken over, or its pool ended): pushed all the same only if
                # the claim may never have reached Redis (its connection failed).
                claimed = ours() is None
            else:
                claimed = ours() is not False
            if not claimed:
                logger.warning("message %s was also run by another process, or its pool "
                               "ended meanwhile; its results are dropped here", message_id)
                return
            self._push(records, message_id)
        finally:
            self._claimed = None

    def _push(self, records: dict[str, list[ResultRecord]], message_id: str,
              while_held_by: str | None = None) -> bool:
        """Push the records, and mark the message's claim done with the last of them; with
        ``while_held_by``, only while that holder holds the claim (False if it did not:
        nothing more was pushed)."""
        pools = list(records.items())
        for position, (pool_id, pool_records) in enumerate(pools, 1):
            wire = [self._placed(pool_id, record).to_bytes(self._signer, pool_id)
                    for record in pool_records]
            last = position == len(pools)
            if while_held_by is None:
                self._store.push_results(pool_id, wire, finished=message_id if last else None)
            elif not self._store.push_results_while_held(pool_id, wire, message_id,
                                                         while_held_by, finished=last):
                return False
        if not pools:
            self._store.finish(message_id)
        return True

    def _placed(self, pool_id: str, record: ResultRecord) -> ResultRecord:
        """The record as it travels: a large payload written as a blob first (a result
        that does not fit in the store fails its task, saying so)."""
        payload = record.payload
        if not isinstance(payload, Payload) or payload.nbytes <= RESULT_INLINE_LIMIT:
            return record
        try:
            ref = self._store.blobs.put(pool_id, result_blob(record.task_id, payload.digest),
                                        payload, f"the result of task {record.task_id}")
        except PayloadTooLargeError as exc:
            return execute.failure_record(record.task_id, exc)
        return record._replace(payload=ref)

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
            self.report_failure(messages, message_id, ran_out_of_time("hard time limit"))
        elif redeliveries >= MAX_ATTEMPTS:
            self.report_failure(messages, message_id,
                                gave_up(redeliveries, "its process exited"))
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
                execute.failure_record(envelope.task_id, error))
        self._push(records, message_id)

    def _parse(self, message: Any) -> TaskEnvelope | tuple[str, ResultRecord] | None:
        """The message's envelope, authenticated; else what its pool is told of it, if it
        names one (``(pool id, record)``), or None."""
        try:
            return TaskEnvelope.from_wire(message, self._signer)
        except IncompatibleEnvelopeError as exc:
            logger.error("task %s of pool %s refused: %s", exc.task_id, exc.pool_id, exc)
            assert exc.pool_id is not None and exc.task_id is not None
            return exc.pool_id, execute.failure_record(exc.task_id, exc)
        except EnvelopeError as exc:
            # Not run, not loaded, not re-queued. Its caller, if it names one, is told at once.
            logger.error("refused a message: %s (pool %s, task %s)", exc, exc.pool_id,
                         exc.task_id)
            if exc.pool_id is None or exc.task_id is None:
                return None
            reason = str(exc) if isinstance(exc, AuthenticationError) else f"malformed: {exc}"
            return exc.pool_id, ResultRecord.rejection(exc.task_id, reason)

    def _run_one(self, envelope: TaskEnvelope) -> tuple[str, ResultRecord] | None:
        if not self._pool_is_live(envelope.pool_id):
            logger.info("skipped task %s: its pool was terminated or its client is gone",
                        envelope.task_id)
            return None
        self._running_for = envelope.pool_id
        logger.info("task %s of pool %s started", envelope.task_id, envelope.pool_id)
        try:
            record = execute.execute(envelope, functools.partial(self._fetch, envelope.pool_id))
        finally:
            self._running_for = None
        logger.info("task %s of pool %s %s in %.3f s", envelope.task_id, envelope.pool_id,
                    "succeeded" if record.ok else "failed", record.elapsed or 0.0)
        return envelope.pool_id, record

    def _fetch(self, pool_id: str, ref: BlobRef) -> Payload:
        return self._store.blobs.get(pool_id, ref.digest, ref)

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
                if message_id is not None and self._lost_claim(message_id):
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

    def _lost_claim(self, message_id: str) -> bool:
        """Renew the running message's claim: whether another process has it now. The run
        may have ended, pushing its results, while the renewal was on its way: a claim found
        ``done`` then is this run's own, and the renewal stale."""
        renewal = self._claims.renew(message_id)
        if renewal is Renewal.OURS or self._claimed != message_id:
            return False
        return renewal is Renewal.TAKEN or self._finishing != message_id

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


class ProcessLocalRunner:
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
        self._runner: TaskRunner | None = None

    def get(self) -> TaskRunner:
        store = self.store()  # forgets an inherited runner too
        if self._runner is None:
            self._runner = TaskRunner(store, self._signer, self._claim_ttl,
                                       self._flags_redeliveries)
        return self._runner

    def store(self) -> RedisStore:
        if self._store is None or self._pid != os.getpid():
            # Never one inherited through a fork: its connection is the parent's.
            self._store = RedisStore(self._url)
            self._runner = None
            self._pid = os.getpid()
        return self._store
