"""One pool's traffic with its workers, on two threads, as ``multiprocessing.Pool`` has (the
drawing in :mod:`distpool.client` shows where each thing happens).

* The **dispatcher** takes tasks from the jobs' sources, in submission order
  (:mod:`.sources`), stages what they carry (:mod:`.staging`) and publishes them while fewer
  than ``processes`` messages are in flight, one task or several short ones a message. A
  caller that will wait for its results (``apply``, ``map``) and submits while a slot is
  free, and the dispatcher idle, dispatches them itself: a sequential ``apply`` would
  otherwise wait for the dispatcher thread to wake.
* The **collector** pops result records, authenticates them and frees their slots. It also
  keeps the pool's liveness key fresh, so it runs no callbacks, and nothing anyone pushes
  onto the pool's list stops it: a record that cannot be read fails at most the task it
  names. And it watches the messages in flight that no worker holds (:mod:`.watch`).

Each result is delivered once: a record whose task is not in flight (a duplicate delivery,
or one arriving after terminate) is ignored.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import platform
from ..config import Settings
from ..errors import (
    BrokerUnavailableError,
    DistpoolError,
    PoolTerminatedError,
)
from ..transports import Transport
from ..wire.envelope import TaskEnvelope
from ..wire.messages import TaskMessage
from ..wire.payload import Payload
from .adoption import RunHooks
from .delivery import Delivery, deliver
from .flight import Flight
from .records import BlobResult, RecordReader
from .results import JobResult
from .sources import Job, ReadAhead, Source, Sources
from .staging import Stager
from .tasks import Task
from .watch import MessageWatch

logger = logging.getLogger("distpool")

#: Longest a collector blocks on the store before it checks for a stop or a refresh.
COLLECT_TIMEOUT = 1.0
#: How often the collector reports the pool's progress (and keeps it alive), in seconds.
REPORT_INTERVAL = 2.0
#: How long terminate() waits for the engine's threads to stop.
STOP_TIMEOUT = 10.0

class Engine:
    def __init__(self, transport: Transport, settings: Settings, pool_id: str,
                 processes: int, transport_gone: Callable[[], str | None] = lambda: None,
                 run: RunHooks | None = None) -> None:
        """``transport_gone`` says why the transport will never answer again, if it knows (a
        private local cluster that stopped), so that the tasks in flight fail at once.
        ``run``: what a named run on a cluster needs (see :class:`RunHooks`)."""
        self.pool_id = pool_id
        self._publisher, self._store, self._signer = transport
        self._stager = Stager(self._store.blobs, pool_id, settings.pool_ttl)
        self._transport_gone = transport_gone
        self._queue = settings.queue
        self._task_timeout = settings.task_timeout
        self._processes = processes
        pool_ttl = settings.pool_ttl
        # Often enough for the liveness key, and for distpool status to show progress.
        self._refresh_interval = min(pool_ttl / 3, REPORT_INTERVAL)
        self._pool_ttl = pool_ttl
        self._keep = None if run is None else settings.resume_window
        self._on_sent = None if run is None else run.sent
        self._identity = {"host": socket.gethostname(), "pid": os.getpid(),
                          "processes": processes, "started": round(time.time(), 3)}
        self._sent = self._done = 0
        self._cond = threading.Condition(threading.Lock())
        # Held by the thread that dispatches: the dispatcher's, or a caller in its stead.
        self._dispatching = threading.Lock()
        self._sources = Sources(self._cond, lambda: self._closing, self._source_failed)
        self._flight = Flight()
        # Orphaned messages are sent again once the broker's own recovery (which takes about
        # worker_lost_timeout) has had its chance; they fail when no worker is left.
        self._watch = MessageWatch(resend_after=2 * settings.worker_lost_timeout,
                                   no_worker_timeout=pool_ttl)
        self._resend: collections.deque[list[TaskEnvelope]] = collections.deque()
        self._jobs: dict[int, JobResult] = {}
        self._job_ids = itertools.count(0 if run is None else run.first_job)
        self._records = RecordReader(pool_id, self._signer, self._store.blobs)
        self._closing = False
        self._terminated = False
        self._released = False
        self._store.refresh_pool(pool_id, pool_ttl, self._report(), self._keep)
        self._delivery = Delivery(pool_id)
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name=f"distpool-dispatcher-{pool_id[:8]}", daemon=True)
        self._collector = threading.Thread(
            target=self._collect_loop, name=f"distpool-collector-{pool_id[:8]}", daemon=True)
        self._dispatcher.start()
        self._collector.start()

    # -- called by the pool --------------------------------------------------------------

    def new_job(self) -> int:
        return next(self._job_ids)

    def submit(self, job: int, result: JobResult, source: Source,
               read_ahead: ReadAhead | None = None, here: bool = False) -> None:
        """Register ``result`` as job ``job`` and queue its tasks for dispatch, no further
        ahead of their consumer than ``read_ahead`` allows. ``here``: the caller will wait
        for the job's results (``apply``, ``map``), and its source reads no iterator of the
        caller's (which may wait on this very thread), so the caller may dispatch it, when
        the dispatcher is idle and a slot free: an ``apply_async`` never waits on the
        broker."""
        with self._cond:
            if self._closing:
                raise ValueError("Pool not running")
            self._jobs[job] = result
            self._sources.add(Job(source, result, read_ahead))
            here = (here and self._flight.messages() < self._processes
                    and self._dispatching.acquire(blocking=False))
            if not here:
                self._cond.notify_all()
        if here:
            try:
                self._dispatch_round()
            finally:
                self._dispatching.release()

    def adopt(self, messages: list[list[Task]], jobs: dict[int, JobResult]) -> None:
        """Keep in flight ``messages``, which an earlier client of this pool sent (a named
        run's, taken over: see :mod:`.adoption`), for their results to go to ``jobs``."""
        with self._cond:
            self._jobs.update(jobs)
            for tasks in messages:
                envelopes = [task.envelope for task in tasks]
                self._flight.add(envelopes[0].task_id, tasks)
                self._watch.sent(envelopes[0].task_id, envelopes)
                self._sent += len(tasks)

    def wake_dispatcher(self) -> None:
        """Something a waiting source depends on changed (its consumer took a chunk)."""
        with self._cond:
            self._cond.notify_all()

    def job_done(self, job: int) -> None:
        """Called by a result object once it needs no more deliveries. (The dispatcher does
        not wait on this: waking it here would cost every sequential apply a thread switch.)"""
        with self._cond:
            self._jobs.pop(job, None)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._wake_collector()

    def join(self) -> None:
        platform.joined(self._dispatcher)  # (Ctrl-C must reach a caller in join())
        platform.joined(self._collector)
        self._delivery.stop()
        self._delivery.join()
        self._release()

    def terminate(self) -> None:
        """Stop everything now: unsent tasks are dropped, sent ones cancelled on the workers,
        and every unfinished result fails with :class:`PoolTerminatedError`."""
        with self._cond:
            if self._terminated or self._released:  # already stopped, or joined and cleaned
                return
            self._closing = self._terminated = True
            self._sources.stop()
            in_flight = self._flight.message_ids()
            self._flight.clear()
            self._watch.clear()
            self._resend.clear()
            jobs = list(self._jobs.values())
            self._cond.notify_all()
        self._delivery.stop(drop=True)  # their results fail below
        try:
            # First the liveness key: every worker then skips the pool's queued tasks, even
            # a worker that starts later and never hears the revoke broadcast.
            self._store.close_pool(self.pool_id)
            self._publisher.revoke(in_flight)
        except Exception as exc:
            logger.warning("pool %s: could not cancel its tasks on the workers: %s",
                           self.pool_id, exc)
        self._wake_collector()
        for result in jobs:
            self._deliver_failure(result, PoolTerminatedError("the pool was terminated"))
        for thread in (self._dispatcher, self._collector):
            if thread is not threading.current_thread():
                thread.join(STOP_TIMEOUT)
        self._delivery.join(STOP_TIMEOUT)  # as multiprocessing's, ends its current callback
        self._release()

    # -- dispatcher thread ---------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                while not self._terminated and not self._resend and not (
                        self._sources.ready() and self._flight.messages() < self._processes):
                    if (self._closing and self._sources.exhausted()
                            and not self._flight.messages()):
                        return
                    self._cond.wait()
                if self._terminated:
                    return
            with self._dispatching:
                self._dispatch_round()

    def _dispatch_round(self) -> None:
        """Send what may be sent now: messages to send again, else new tasks for the free
        slots. For the thread that holds ``_dispatching``."""
        with self._cond:
            if self._terminated:
                return
            again = list(self._resend)
            self._resend.clear()
            free = self._processes - self._flight.messages()
        if again:  # already counted in flight
            self._publish(again)
            return
        if free <= 0:
            return
        batches = self._sources.next_messages(free)
        staged = [self._stage(batch) for batch in batches]
        with self._cond:
            if self._terminated:
                return
            for batch, (message, _) in zip(batches, staged):
                self._flight.add(message[0].task_id, batch)
                self._watch.sent(message[0].task_id, message)
                self._sent += len(message)
        for message, error in staged:
            if error is not None:
                for envelope in message:
                    self._complete(envelope.task_id, False, error)
        ready = [(batch, message) for batch, (message, error) in zip(batches, staged)
                 if error is None]
        if ready:
            self._publish([message for _, message in ready], [batch for batch, _ in ready])

    def _stage(self, batch: list[Task]) -> tuple[list[TaskEnvelope], Exception | None]:
        """The message of ``batch``, staged by the backend, or why it could not be."""
        envelopes = [task.envelope for task in batch]
        try:
            return self._stager.stage(envelopes[0].task_id, envelopes), None
        except DistpoolError as exc:  # says what and why already
            return envelopes, exc
        except Exception as exc:
            return envelopes, BrokerUnavailableError(
                f"could not store the data of task {envelopes[0].task_id} in the result "
                f"store: {exc}")

    def _source_failed(self, job: Job, exc: Exception) -> None:
        self._delivery.put(functools.partial(job.result.input_failed, job.sent, exc))

    def _publish(self, messages: list[list[TaskEnvelope]],
                 first_sent: list[list[Task]] | None = None) -> None:
        """Send ``messages``; ``first_sent``, their tasks, unless they were sent before."""
        try:
            wire = [TaskMessage.of(message, self._signer, self._task_timeout)
                    for message in messages]
            if first_sent is not None and self._on_sent is not None:
                self._on_sent([(tasks, list(message.args))
                               for tasks, message in zip(first_sent, wire)])
            self._publisher.publish(wire)
        except Exception as exc:
            error = BrokerUnavailableError(f"could not send tasks to the broker: {exc}")
            for message in messages:
                for envelope in message:
                    self._complete(envelope.task_id, False, error)

    # -- collector thread ----------------------------------------------------------------

    def _collect_loop(self) -> None:
        next_refresh = time.monotonic() + self._refresh_interval
        unreachable_since: float | None = None
        while True:
            with self._cond:
                if self._terminated or (self._closing and not self._jobs):
                    return
            try:
                records = self._store.pop_results(self.pool_id, COLLECT_TIMEOUT)
                if time.monotonic() >= next_refresh:
                    self._stager.drop_unused()
                    if not self._store.refresh_pool(self.pool_id, self._pool_ttl,
                                                    self._report(), self._keep):
                        # Workers skip the tasks of a pool not marked live, and a store that
                        # restarted has lost the queued ones: these results may never come.
                        self._fail_in_flight(BrokerUnavailableError(
                            "the result store lost this pool's liveness key (a restart "
                            "without persistence, or the pool unheard of for longer than "
                            "pool_ttl): its tasks in flight may have been dropped"))
                    self._watch_messages()
                    next_refresh = time.monotonic() + self._refresh_interval
            except Exception as exc:
                unreachable_since = self._store_failed(exc, unreachable_since)
                time.sleep(COLLECT_TIMEOUT)
                continue
            unreachable_since = None
            for raw in records:
                try:
                    outcome = self._records.read(raw)
                    if outcome is not None:
                        self._complete(*outcome)
                except Exception:  # a bug, or input no check foresaw: lose it, not the pool
                    logger.exception("pool %s: dropped a result record", self.pool_id)
            if records:
                # Hand the GIL to the threads these results woke (callers, or the delivery
                # thread). Otherwise they wait until this thread blocks in its next pop, which
                # a sequential apply would feel.
                time.sleep(0)

    def _store_failed(self, exc: Exception, since: float | None) -> float:
        """Log a failed pop or refresh, and fail the tasks in flight once their results
        cannot come any more. Returns when the store's current outage began."""
        now = time.monotonic()
        logger.warning("pool %s: result store unavailable, retrying: %s", self.pool_id, exc)
        gone = self._transport_gone()
        if gone is not None:
            self._fail_in_flight(BrokerUnavailableError(f"{gone}; last error: {exc}"))
        elif since is not None and now - since >= self._pool_ttl:
            # Unrefreshed that long, the pool's liveness key has lapsed and workers drop
            # its tasks: their results may never come.
            self._fail_in_flight(BrokerUnavailableError(
                f"the result store was unreachable for {now - since:.0f} s, longer than "
                f"the pool's pool_ttl; last error: {exc}"))
            return now
        return now if since is None else since

    def _watch_messages(self) -> None:
        """Send orphaned messages again; fail them when no worker is left to take them."""
        with self._cond:
            due = self._watch.due()
        if not due:
            return
        claims = dict(zip(due, self._store.message_states(self.pool_id, due)))
        workers = self._store.worker_slots(self._queue)
        with self._cond:
            verdict = self._watch.judge(claims, workers)
            if verdict.resend:
                logger.warning("pool %s: sending %d message(s) again that no worker holds",
                               self.pool_id, len(verdict.resend))
                self._resend.extend(list(message) for message in verdict.resend)
                self._cond.notify_all()
        error = BrokerUnavailableError(
            f"no worker has served this pool's queue for {self._pool_ttl:.0f} s (pool_ttl) "
            "and nobody holds these tasks: the workers are gone, or cannot reach the broker "
            "(a Redis at maxclients refuses their connections)")
        for message in verdict.fail:
            for envelope in message:
                self._complete(envelope.task_id, False, error)

    def _report(self) -> dict[str, Any]:
        return {**self._identity, "sent": self._sent, "done": self._done,
                "in_flight": len(self._flight)}

    def _complete(self, task_id: str, ok: bool, error: BaseException | None,
                  elapsed: float | None = None,
                  payload: Payload | BlobResult | None = None) -> None:
        """Free the slot of the task named ``task_id`` and queue its outcome for delivery:
        ``error``, or what ``payload`` holds (or fetches, for a result sent as a blob)."""
        with self._cond:
            landed = self._flight.land(task_id)
            if landed is None:
                return
            task, message_done = landed
            self._done += 1
            if message_done:
                self._watch.finished(task.message_id)
                # A slot is free: the dispatcher may have tasks for it, or be done. Woken
                # for nothing, it would cost every sequential apply a thread switch.
                if self._closing or self._sources.ready():
                    self._cond.notify_all()
            result = self._jobs.get(task.job)
        if message_done:
            self._stager.release([task.message_id])
        if elapsed is not None:
            self._sources.task_times.record(task.function, elapsed)
        if result is not None:
            self._delivery.put(functools.partial(deliver, result, task.chunk, ok, error,
                                                 payload, task_id), result.quiet)

    def _fail_in_flight(self, error: Exception) -> None:
        """Fail every task sent and not yet reported; a record that arrives for one later is
        ignored, so each result is still delivered once."""
        with self._cond:
            in_flight = self._flight.task_ids()
        for task_id in in_flight:
            self._complete(task_id, False, error)

    def _deliver_failure(self, result: JobResult, exc: BaseException) -> None:
        try:
            result.abort(exc)
        except Exception:
            logger.exception("pool %s: an error callback raised", self.pool_id)

    # -- shared ------------------------------------------------------------------------

    def _wake_collector(self) -> None:
        try:
            self._store.wake(self.pool_id)
        except Exception as exc:
            logger.debug("pool %s: could not wake the collector: %s", self.pool_id, exc)

    def _release(self) -> None:
        with self._cond:
            if self._released:
                return
            self._released = True
        try:
            self._store.close_pool(self.pool_id)
        except Exception as exc:
            logger.warning("pool %s: could not remove its keys: %s", self.pool_id, exc)
        self._publisher.close()
        self._store.close()

