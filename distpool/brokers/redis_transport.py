"""kombu's Redis transport, with one redis-py client object per channel instead of one per
command, and delivery records that do not wait for Redis's reply.

Outside its event loop, kombu's Redis channel builds a new ``redis.Redis`` object for every
command it sends: each publish, and on a worker each delivery's and each acknowledgement's
bookkeeping. Building one (it copies a table of some 170 response callbacks) costs as much
CPU as the command's round trip to Redis takes. The object holds no connection of
its own; the channel's connection pool does, and it is thread-safe. So one object serves
every command of the channel exactly as fresh ones would, and it is rebuilt whenever the
channel replaces its pool (after a reconnection).

On a worker, kombu records every message it delivers and waits for Redis to confirm the
record before the task may start: a round trip on the latency path of every task. Here the
record is sent without waiting; its reply is read with the acknowledgement's (see
:mod:`.redis_qos`).

A consumer takes a message with an atomic move into a held list of its own, which the delivery
record empties (see :mod:`distpool.brokers.held_messages`): no instant exists at which the
death of a consumer loses the message it has just taken. What is not a message (hostile or
garbled bytes on the queue) is logged and dropped, never delivered.

Without an event loop (a Windows worker), the consumer's poll of its channels is woken by each
acknowledgement, so that it asks for the next message at once (see :mod:`.redis_poller`).

Used for ``redis://`` brokers (see :mod:`.profiles`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import loads
from kombu.utils.objects import cached_property

from . import held_messages
from .redis_connections import shared_pool
from .redis_identity import client_identity
from .redis_poller import LoopAddingReadersOnce, WakeablePoller
from .redis_qos import QoS

logger = logging.getLogger("distpool")

#: The value of Celery's ``broker_transport`` setting that selects this transport.
TRANSPORT = f"{__name__}:Transport"


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, consuming with an atomic move into the consumer's held list."""

    QoS = QoS
    _command_client: Any = None
    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.Channel.from_transport_options, "distpool_holder", "distpool_sweepers",
        "distpool_sweep_turn", "distpool_url")
    #: This consumer's id for its held list and lease; set per worker process (see
    #: ``create_app``), else one of its own.
    distpool_holder: str | None = None
    #: How many consumers take turns sweeping lapsed holds (a node's slots), and this one's
    #: turn among them: see QoS.
    distpool_sweepers: int = 1
    distpool_sweep_turn: int | None = None
    #: The broker's URL, as distpool's settings give it (with its query options), for the
    #: QoS's own connection; else kombu's connection's.
    distpool_url: str | None = None
    _held_item: bytes | None = None
    _lease_renewed_at = float("-inf")

    @cached_property
    def _packed_moves(self) -> dict[tuple[str, float], Any]:
        return {}

    @cached_property
    def holder(self) -> str:
        return self.distpool_holder or uuid.uuid4().hex

    def take_held_item(self) -> bytes | None:
        """The raw message being delivered now, if it came through the held list: its
        delivery record must take it out of that list."""
        item, self._held_item = self._held_item, None
        return item

    def _brpop_start(self, timeout: int | None = None) -> None:
        # One queue per wait, in turn: BLMOVE has one source. distpool publishes without
        # priorities, so only the queue itself (priority 0) is read.
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._renew_lease()
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]
        self._moving_from = queues[0]
        self.client.connection.send_packed_command(self._packed_move(
            queues[0], self.brpop_timeout if timeout is None else timeout))

    def _packed_move(self, queue: str, timeout: float) -> Any:
        """The blocking move from ``queue`` as it goes on the wire: the same on every wait,
        so packed once (redis-py packs each command anew, as much CPU as the move's
        round trip)."""
        key = (queue, timeout)
        if key not in self._packed_moves:
            self._packed_moves[key] = self.client.connection.pack_command(
                "BLMOVE", queue, held_messages.held_list(self.holder), "RIGHT", "LEFT",
                timeout)
        return self._packed_moves[key]

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # reconnects on the next wait
                raise
        finally:
            self._in_poll = None  # type: ignore[assignment]
        if item is None:
            raise Empty()
        queue = self._moving_from
        self._queue_cycle.rotate(queue)
        payload = self._message_or_none(item)
        if payload is None:
            logger.error("dropped an item of queue %s that is not a message: %r", queue,
                         item[:200])
            with self.conn_or_acquire() as client:
                client.lrem(held_messages.held_list(self.holder), -1, item)
            return True
        self._held_item = item
        try:
            self.connection._deliver(payload, queue)
        finally:
            self._held_item = None  # not recorded (no consumer took it): stays held
        return True

    def _message_or_none(self, item: bytes) -> dict[str, Any] | None:
        """The message, if ``item`` is one kombu can deliver and record."""
        try:
            payload = loads(item)  # type: ignore[no-untyped-call]
            delivery = payload["properties"]["delivery_info"]
            delivery["exchange"], delivery["routing_key"]  # noqa: B018 - the record needs them
            # What the consumer builds from it: that must not fail.
            self.Message(payload, channel=self)  # type: ignore[no-untyped-call]
        except Exception:
            return None
        return payload if isinstance(payload, dict) else None

    def _renew_lease(self) -> None:
        # Renewed well before it lapses: a lapsed lease gives the held list away.
        now = time.monotonic()
        if now - self._lease_renewed_at < self.visibility_timeout / 4:
            return
        with self.conn_or_acquire() as client:
            held_messages.renew_lease(client, self.holder, self.visibility_timeout)
        self._lease_renewed_at = now

    def queue_of(self, payload: dict[str, Any]) -> str | None:
        """The queue a message held by a consumer goes back to."""
        delivery = payload["properties"]["delivery_info"]
        queues = self._lookup(  # type: ignore[no-untyped-call]
            delivery["exchange"], delivery["routing_key"])
        return str(next(iter(queues))) if queues else None

    def restore_held(self, holder: str) -> int:
        """Put the messages held by ``holder`` (a consumer that is gone) back on the queue."""
        with self.conn_or_acquire() as client:
            return held_messages.restore(client, holder, self.queue_of)

    def _get_pool(self, asynchronous: bool = False) -> Any:
        pool = super()._get_pool(asynchronous)  # type: ignore[no-untyped-call]
        if asynchronous:  # each blocking wait (a consumer's move, a subscription) has its own
            return pool
        return shared_pool(self._connparams(), pool)  # the process's channels share theirs

    def _disconnect_pools(self) -> None:
        shared, self._pool = self._pool, None
        super()._disconnect_pools()  # type: ignore[no-untyped-call]
        if shared is not None:  # others may be using some of its connections now
            shared.disconnect(inuse_connections=False)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[no-untyped-call]
        return {**params, **client_identity()}

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        cached = self._command_client
        if cached is None or cached.connection_pool is not self.pool:
            cached = self._command_client = self._create_client()  # type: ignore[no-untyped-call]
        yield cached

    def close(self) -> None:
        if self._in_poll and not self.closed:
            # kombu would wait for the blocking move to answer, up to its timeout (seconds,
            # on every worker stop): cut it short instead. What it may have moved meanwhile
            # is in this consumer's held list, which goes back to the queue.
            self.client.connection.disconnect()  # the one _brpop_start waits on
            self._in_poll = None  # type: ignore[assignment]
            try:
                self.restore_held(self.holder)
            except Exception as exc:  # the broker is away: the lease lapses, others sweep it
                logger.warning("could not put back the messages held by %s: %s", self.holder,
                               exc)
        super().close()  # type: ignore[no-untyped-call]  # restores the messages still held
        if self._qos is not None:
            self._qos.close()


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        # Without an event loop, each poll blocks until a socket is ready, an acknowledgement
        # wakes it or its timeout ends: kombu's sleep between polls, the ``polling_interval``
        # option (which kombu has just made the blocking move's timeout), only delayed the
        # next message.
        self.cycle = WakeablePoller()  # type: ignore[assignment]
        self.polling_interval = None

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(  # type: ignore[no-untyped-call]
            connection, LoopAddingReadersOnce(loop))
