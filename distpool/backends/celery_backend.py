"""The Celery/Redis backend: Celery carries tasks, a Redis store carries results back.

Worker side: :func:`create_app` builds the Celery app that ``distpool worker`` runs. It
serves one generic task, whose only argument is a JSON task envelope; settings suit long
tasks (one task reserved per process, late acknowledgement, re-queue when a process dies).

Client side: :class:`CeleryBackend` publishes envelopes as ordinary Celery task messages and
pops result records from the pool's Redis list, so results stream back without polling
Celery's result backend.

Fork safety: a client never touches ``app.pool`` or kombu's global pools. Celery registers an
after-fork hook the first time they are used, and that hook can hang a
``multiprocessing`` child forked later from the same process (users mix both). The client
owns one plain connection, used by the pool's dispatcher thread alone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery, bootsteps
from kombu import Connection, Producer

from .. import worker
from ..config import Settings, mask_url
from ..errors import BrokerUnavailableError, EnvelopeError, IncompatibleEnvelopeError
from ..serialization import TaskEnvelope
from .base import Backend
from .redis_store import RedisStore

logger = logging.getLogger("distpool")

TASK_NAME = "distpool.execute"
#: How often a worker renews its registration, and how long the registration lasts.
REGISTRATION_INTERVAL = 10.0
REGISTRATION_TTL = 3 * REGISTRATION_INTERVAL
#: Kombu's Redis transport hands an unacknowledged message to another worker after this
#: long. distpool's tasks are acknowledged late and may run for hours, so it is set far
#: beyond any task's duration (see README: worker failures).
VISIBILITY_TIMEOUT = 7 * 24 * 3600
#: How long a worker process trusts that a pool it has seen alive still is (seconds).
LIVENESS_CACHE = 1.0
#: A publish or a revoke that cannot reach the broker gives up after about this long.
PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                        "interval_max": 1.0}


def create_app(settings: Settings) -> Celery:
    """The Celery app shared by ``distpool worker`` and by clients (to build messages)."""
    broker_url, result_url = _urls(settings)
    app = Celery("distpool", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
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
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    runner = _ProcessLocalRunner(result_url)

    @app.task(name=TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
    def run_distpool_tasks(*messages: Any) -> None:
        runner.get().run(messages)

    app.steps["worker"].add(_registration_step(settings))
    return app


def _urls(settings: Settings) -> tuple[str, str]:
    if settings.broker_url is None or settings.result_url is None:
        raise ValueError("the Celery backend needs a broker URL and a result URL")
    return settings.broker_url, settings.result_url


class _TaskRunner:
    """Runs the task envelopes of one Celery message in a worker process."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._live_until: dict[str, float] = {}

    def run(self, messages: Sequence[Any]) -> None:
        records: dict[str, list[bytes]] = {}
        for message in messages:
            outcome = self._run_one(message)
            if outcome is not None:
                records.setdefault(outcome[0], []).append(outcome[1])
        # After the whole batch: if this process dies first, the message is re-queued and
        # no result of it has been delivered twice.
        for pool_id, pool_records in records.items():
            self._store.push_results(pool_id, pool_records)

    def _run_one(self, message: Any) -> tuple[str, bytes] | None:
        try:
            envelope = TaskEnvelope.from_wire(message)
        except IncompatibleEnvelopeError as exc:
            logger.error("task %s of pool %s refused: %s", exc.task_id, exc.pool_id, exc)
            if exc.pool_id is None or exc.task_id is None:
                return None
            return exc.pool_id, worker.failure_record(exc.task_id, exc)
        except EnvelopeError as exc:
            logger.error("dropped a message that is not a distpool task: %s", exc)
            return None
        if not self._pool_is_live(envelope.pool_id):
            logger.info("skipped task %s: its pool was terminated or its client is gone",
                        envelope.task_id)
            return None
        return envelope.pool_id, worker.execute(envelope)

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


class _ProcessLocalRunner:
    """One task runner, with its own store connection, per worker process."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pid: int | None = None
        self._runner: _TaskRunner | None = None

    def get(self) -> _TaskRunner:
        if self._runner is None or self._pid != os.getpid():
            self._runner, self._pid = _TaskRunner(RedisStore(self._url)), os.getpid()
        return self._runner


def _registration_step(settings: Settings) -> type:
    """A worker bootstep that keeps the worker registered, with its slots, in the store."""

    _, result_url = _urls(settings)

    class Registration(bootsteps.StartStopStep):  # type: ignore[misc]
        label = "distpool registration"

        def __init__(self, w: Any, **kwargs: Any) -> None:
            super().__init__(w, **kwargs)
            self._store = RedisStore(result_url)
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


class CeleryBackend(Backend):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        broker_url, result_url = _urls(settings)
        self._app = create_app(settings)
        self._queue = self._app.amqp.queues[settings.queue]
        self._send = self._app.amqp.send_task_message
        self._store = RedisStore(result_url)
        self._connection: Connection = self._app.connection_for_write()
        self._producer: Producer | None = None
        self._lock = threading.Lock()
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

    def worker_slots(self) -> int:
        return self._store.worker_slots(self._settings.queue)

    def open_pool(self, pool_id: str) -> None:
        self._store.open_pool(pool_id, self._settings.pool_ttl)

    refresh_pool = open_pool

    def publish(self, messages: Sequence[Sequence[TaskEnvelope]]) -> None:
        if self._producer is None:
            self._producer = Producer(self._connection)
        for envelopes in messages:
            first = envelopes[0].task_id
            described = first if len(envelopes) == 1 else f"{first} and {len(envelopes) - 1} more"
            message = self._app.amqp.as_task_v2(
                first, TASK_NAME, args=tuple(envelope.to_wire() for envelope in envelopes),
                argsrepr=f"<distpool task {described}>", kwargsrepr="{}", ignore_result=True,
            )
            self._send(self._producer, TASK_NAME, message, queue=self._queue,
                       retry=True, retry_policy=PUBLISH_RETRY_POLICY)

    def fetch_results(self, pool_id: str, timeout: float) -> list[bytes]:
        return self._store.pop_results(pool_id, timeout)

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
        with self._lock:
            if self._producer is not None:
                self._producer.release()
            self._connection.release()
            self._store.close()


def run_worker(settings: Settings, concurrency: int, name: str, loglevel: str,
               extra_args: Sequence[str] = ()) -> int:
    """Run ``celery worker`` for distpool in this process until it is stopped."""
    app = create_app(settings)
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
