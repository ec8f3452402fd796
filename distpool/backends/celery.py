"""The client's transport on a real cluster: a broker carries tasks, a Redis store results.

:class:`CeleryBackend` publishes envelopes as ordinary Celery task messages and pops result
records from the pool's Redis list, so results stream back without polling Celery's result
backend. What workers do with the messages is in :mod:`distpool.worker`.

On a Redis broker the client writes those messages itself (:mod:`distpool.brokers.
redis_publisher`) and imports neither Celery nor kombu until it revokes tasks: importing them
took most of a first pool's time to its first result. AMQP brokers publish through Celery
(:mod:`distpool.brokers.celery_publisher`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..brokers.celery_app import new_app, urls
from ..brokers.profiles import REDIS, profile_for
from ..brokers.redis_publisher import RedisPublisher, TaskMessage
from ..config import Settings, mask_url
from ..errors import BrokerUnavailableError
from ..store.blobs import result_name
from ..store.nodes import NodeRecords
from ..store.redis_store import RedisStore
from ..wire.bundles import BundleRef
from ..wire.envelope import Bundle, Data, Signer, TaskEnvelope
from ..wire.payload import (
    INLINE_CALLABLE_LIMIT,
    INLINE_LIMIT,
    BlobRef,
    Payload,
    describe_size,
)
from .base import Backend
from .blob_ledger import BlobLedger

if TYPE_CHECKING:
    from celery import Celery

#: A task past its soft time limit (the pool's task_timeout) gets this long to stop before
#: its process is killed.
TIME_LIMIT_GRACE = 5.0
#: How late the broker's or the result store's reply may be before the client's call fails
#: (a pop's, beyond its own wait): a frozen Redis (stopped, its VM paused, or cut off by a
#: partition that drops packets) would otherwise hold the caller, or the collector, for ever.
#: The collector goes on trying, and fails the tasks in flight after pool_ttl of that.
REPLY_TIMEOUT = 10.0


class Publisher(Protocol):
    def ping(self) -> None: ...
    def publish(self, messages: Sequence[TaskMessage]) -> None: ...
    def close(self) -> None: ...


class CeleryBackend(Backend):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._signer = Signer(settings.secret)
        broker_url, result_url = urls(settings)
        self._store = RedisStore(result_url, REPLY_TIMEOUT)
        self._blobs = BlobLedger()
        # Bundles stay for the pool's life, for workers that join late (the pool's end, or
        # its expiry if its client dies, deletes them): pool id -> their hashes.
        self._bundles: dict[str, set[str]] = {}
        try:
            self._publisher = _publisher(settings)
        except BaseException:
            self._store.close()
            raise
        for what, url, ping in (("result store", result_url, self._store.ping),
                                ("broker", broker_url, self._publisher.ping)):
            try:
                ping()
            except Exception as exc:
                self._close_quietly()
                raise BrokerUnavailableError(
                    f"cannot reach the {what} at {mask_url(url)}: {exc}") from None

    @property
    def signer(self) -> Signer:
        return self._signer

    def worker_slots(self) -> int:
        return self._store.worker_slots(self._settings.queue)

    def refresh_pool(self, pool_id: str, info: dict[str, Any]) -> bool:
        self._delete_unused_blobs(pool_id)
        return self._store.refresh_pool(pool_id, self._settings.pool_ttl, info)

    def stage(self, pool_id: str, message_id: str,
              envelopes: Sequence[TaskEnvelope]) -> list[TaskEnvelope]:
        self._delete_unused_blobs(pool_id)
        return [self._staged(pool_id, message_id, envelope) for envelope in envelopes]

    def _staged(self, pool_id: str, message_id: str, envelope: TaskEnvelope) -> TaskEnvelope:
        task = envelope.task_id
        function = self._place(pool_id, message_id, envelope.function, True,
                               "the function of task", task)
        arguments = self._place(pool_id, message_id, envelope.arguments, False,
                                "the arguments of task", task)
        initializer = None if envelope.initializer is None else self._place(
            pool_id, message_id, envelope.initializer, True, "the initializer of task", task)
        bundles = tuple(self._bundle(pool_id, bundle) for bundle in envelope.bundles)
        if (function is envelope.function and arguments is envelope.arguments
                and initializer is envelope.initializer and bundles == envelope.bundles):
            return envelope  # all inline: the common case of small tasks, as cheap as can be
        return dataclasses.replace(envelope, function=function, arguments=arguments,
                                   initializer=initializer, bundles=bundles)

    def _bundle(self, pool_id: str, bundle: Bundle) -> BundleRef:
        """The reference to ``bundle``, written as a blob of the pool the first time."""
        if isinstance(bundle, BundleRef):
            return bundle
        ref = bundle.archive.ref()
        stored = self._bundles.setdefault(pool_id, set())
        if ref.digest not in stored:
            self._store.blobs.put(pool_id, ref.digest, bundle.archive,
                                  f"the bundle of {bundle.name}", self._settings.pool_ttl)
            stored.add(ref.digest)
        return BundleRef(bundle.name, ref.digest, ref.size)

    def _place(self, pool_id: str, message_id: str, data: Data, code: bool, what: str,
               task: str) -> Data:
        """``data`` (``what`` it is, of ``task``) as an envelope carries it: inline if
        small, else a reference to its blob, written unless the store has it already.
        ``code`` (a callable, or the initializer) is kept for reuse once released, and
        inline only when tiny."""
        limit = INLINE_CALLABLE_LIMIT if code else INLINE_LIMIT
        if not isinstance(data, Payload) or data.nbytes <= limit:
            return data
        ref = data.ref()
        if self._blobs.hold(message_id, ref, reusable=code):
            self._store.blobs.put(pool_id, ref.digest, data, f"{what} {task}",
                                  self._settings.pool_ttl)
        return ref

    def release(self, pool_id: str, message_ids: Sequence[str]) -> None:
        self._blobs.release(list(message_ids))

    def fetch_result(self, pool_id: str, task_id: str, ref: BlobRef) -> Payload:
        return self._store.blobs.take(pool_id, result_name(task_id, ref.digest), ref)

    def _delete_unused_blobs(self, pool_id: str) -> None:
        self._blobs.drop_unused(lambda refs: self._store.blobs.delete(
            pool_id, [(ref.digest, ref.size) for ref in refs], wait=False))

    def publish(self, messages: Sequence[Sequence[TaskEnvelope]]) -> None:
        timeout = self._settings.task_timeout
        outgoing = []
        for envelopes in messages:
            # The soft limit raises in the task, the hard one kills its process.
            soft = None if timeout is None else timeout * len(envelopes)
            outgoing.append(TaskMessage(
                envelopes[0].task_id, [envelope.to_wire(self._signer) for envelope in envelopes],
                describe(envelopes), soft, None if soft is None else soft + TIME_LIMIT_GRACE,
                shadow=envelopes[0].label))
        self._publisher.publish(outgoing)

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
            app = _client_app(self._settings)  # Celery's first import, on a Redis broker
            with app.connection_for_write() as connection:
                app.control.revoke(ids, connection=connection, terminate=True,
                                   signal="SIGKILL")

    def close_pool(self, pool_id: str) -> None:
        self._bundles.pop(pool_id, None)
        self._store.close_pool(pool_id)

    def close(self) -> None:
        self._publisher.close()
        self._store.close()

    def _close_quietly(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: S110 - already failing with a better error
            pass


def describe(envelopes: Sequence[TaskEnvelope]) -> str:
    """A message's tasks as operators see them in place of its arguments (Celery's
    ``argsrepr``): its pool, its tasks (``job:chunk``) and the size of their arguments."""
    pool_id = envelopes[0].pool_id
    first, last = (e.task_id[len(pool_id) + 1:] for e in (envelopes[0], envelopes[-1]))
    tasks = (f"task {first}" if len(envelopes) == 1
             else f"tasks {first} to {last} ({len(envelopes)})")
    size = sum(envelope.arguments.size if isinstance(envelope.arguments, BlobRef)
               else envelope.arguments.nbytes for envelope in envelopes)
    return f"pool {pool_id[:8]}: {tasks}, arguments {describe_size(size)}"


def _publisher(settings: Settings) -> Publisher:
    broker_url, _ = urls(settings)
    if profile_for(broker_url) is REDIS:
        return RedisPublisher(broker_url, settings.queue, REPLY_TIMEOUT)
    from ..brokers.celery_publisher import CeleryPublisher

    return CeleryPublisher(_client_app(settings))


@functools.lru_cache(maxsize=8)
def _client_app(settings: Settings) -> Celery:
    """The app a client builds its messages (AMQP) and revokes with, shared by the pools of a
    process that have the same settings. Building one, with its queues and task sender, took
    about 1.5 ms of each ``Pool()`` on running workers; it holds no connection (each pool has
    its own)."""
    return new_app(settings)


def cluster_status(settings: Settings, timeout: float = 5.0) -> dict[str, Any]:
    """What ``distpool status`` shows: the nodes serving the queue (with their slots, busy
    slots and what each slot runs), its depth, and the pools with work in flight; the shape
    is documented in ``distpool status --help``. No worker is asked anything: the nodes are
    read from the records their parents publish (:mod:`distpool.store.nodes`), in one round
    trip to the result store, however many slots they have. ``timeout``: for each connect
    and reply."""
    broker_url, result_url = urls(settings)
    records = NodeRecords(result_url, timeout)
    store = RedisStore(result_url, timeout)
    try:
        nodes = records.read(settings.queue)
        pools = store.pools()
    finally:
        records.close()
        store.close()
    with new_app(settings).connection_for_write(connect_timeout=timeout) as connection:
        try:
            _, depth, _ = connection.default_channel.queue_declare(
                queue=settings.queue, passive=True)
        except connection.channel_errors:  # an AMQP queue that was never declared
            depth = 0
    return {"broker": mask_url(broker_url), "queue": settings.queue, "queue_depth": depth,
            "nodes": nodes,
            "pools": [{"id": pool_id, **info} for pool_id, info in sorted(pools.items())]}
