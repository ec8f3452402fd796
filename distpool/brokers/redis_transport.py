"""kombu's Redis transport, with one redis-py client object per channel instead of one per
command, and delivery records that do not wait for Redis's reply.

Outside its event loop, kombu's Redis channel builds a new ``redis.Redis`` object for every
command it sends: each publish, and on a worker each delivery's and each acknowledgement's
bookkeeping. Building one (it copies a table of some 170 response callbacks) costs as much
CPU as the command's round trip to Redis takes. The object holds no connection of
its own; the channel's connection pool does, and it is thread-safe. So one object serves
every command of the channel exactly as fresh ones would, and it is rebuilt whenever the
channel replaces its pool (after a reconnection).

On a worker, kombu records every message it delivers (see :class:`QoS`) and waits for Redis
to confirm the record before the task may start: a round trip on the latency path of every
task. Here the record is sent without waiting; its reply is read with the acknowledgement's.

A consumer takes a message with an atomic move into a held list of its own, which the delivery
record empties (see :mod:`distpool.brokers.held_messages`): no instant exists at which the
death of a consumer loses the message it has just taken. What is not a message (hostile or
garbled bytes on the queue) is logged and dropped, never delivered.

Without an event loop (a Windows worker), the consumer's poll of its channels is woken by each
acknowledgement, so that it asks for the next message at once (see :mod:`.redis_poller`).

Used for ``redis://`` brokers (see :mod:`.profiles`).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

from ..redis_client.connection import Connection, PendingReplies
from ..redis_client.protocol import ReplyError
from ..retry import RetryPolicy
from . import held_messages
from .redis_connections import shared_pool, url_of
from .redis_identity import client_identity
from .redis_poller import LoopAddingReadersOnce, WakeablePoller

logger = logging.getLogger("distpool")

#: New connections tried, at once, before a delivery record or an acknowledgement fails.
SEND_RETRY = RetryPolicy(retries=2, base=0.0, jitter=False)

#: The value of Celery's ``broker_transport`` setting that selects this transport.
TRANSPORT = f"{__name__}:Transport"


class QoS(kombu_redis.QoS):
    """kombu's acknowledgement emulation for Redis, with delivery records and
    acknowledgements sent unconfirmed.

    kombu records each message it delivers (ZADD to ``unacked_index``, HSET to ``unacked``, in
    one transaction) so that a dead worker's message can be delivered again, and removes the
    record when the message is acknowledged, each time waiting for Redis's reply: two round
    trips on every task's way. Here both go through a connection of distpool's own
    (:class:`~distpool.redis_client.connection.Connection`: sent as they are, without
    redis-py's encoding of every argument, and read later), and neither waits: each send
    first reads the replies to the one before, which came in long ago (a record's, after its
    task; an acknowledgement's, once the next message has come). Redis runs one connection's
    commands
    in order, so an acknowledgement never overtakes its record. A transaction is in the
    socket's send buffer before the task starts (or the next message is taken), and buffered
    data still reaches Redis if the process then dies. Whatever else reads the records (the
    restores) first reads every outstanding reply, so that every record sent has been
    applied. If the connection fails, every transaction not yet confirmed is sent again on a
    new one (each is idempotent). The record also takes the message out of the consumer's
    held list: if a connection that dropped unnoticed swallows it and the process dies before
    its acknowledgement sends it again, the message is still held, and goes back on the queue
    with the rest of the dead consumer's held list. An acknowledgement so lost leaves the
    message's record, and the message is delivered again once the record lapses: its claim,
    marked done (:mod:`distpool.worker.claims`), keeps it from running twice.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._sweep_turn: int | None = None
        # Transactions whose replies are not read yet, oldest first. On a new connection all
        # are sent again: Redis may not have applied them, and each is idempotent.
        self._unconfirmed: list[_Transaction] = []

    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        held = self.channel.take_held_item()
        # kombu's record, ``[message, exchange, routing key]`` in JSON. The message is the
        # item as taken, when there is one: JSON already (it was parsed from it), and
        # encoding its parsed form again would cost more than the rest of the delivery.
        exchange, routing_key = delivery["exchange"], delivery["routing_key"]
        if held is None:
            record = dumps([message._raw, exchange, routing_key])  # type: ignore[no-untyped-call]
        else:  # (two names: plain JSON strings)
            record = b"[%s, %s, %s]" % (held, json.dumps(exchange).encode(),
                                        json.dumps(routing_key).encode())
        commands = [("ZADD", self.unacked_index_key, time.time(), delivery_tag),
                    ("HSET", self.unacked_key, delivery_tag, record)]
        if held is not None:  # out of the held list in the record's own transaction
            commands.append(("LREM", held_messages.held_list(self.channel.holder), -1, held))
        self._send(commands, confirm=False)
        # kombu's own bookkeeping, less its Redis part.
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: str) -> None:
        self._send([("ZREM", self.unacked_index_key, delivery_tag),
                    ("HDEL", self.unacked_key, delivery_tag)], confirm=False)
        virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
        # The consumer may take another message now: a poll blocked without an event loop
        # (the acknowledgement comes from the pool's thread) goes and asks for it at once.
        transport = self.channel.connection
        if transport is not None:  # None once the channel is closed
            transport.cycle.wake()

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        """kombu's sweep for lapsed holds (kombu calls it on a timer), with the held lists
        swept too; of ``distpool_sweepers`` consumers taking turns, each sweeps at one call
        in that many, from its own first one (its ``distpool_sweep_turn``, a slot's index;
        else a random one), so that between them a sweep happens about every call, however
        many started together."""
        sweepers = max(1, self.channel.distpool_sweepers)
        if self._sweep_turn is None:
            turn = self.channel.distpool_sweep_turn
            self._sweep_turn = random.randrange(sweepers) if turn is None else turn
        turn, self._sweep_turn = self._sweep_turn, self._sweep_turn + 1
        if turn % sweepers:
            return
        # kombu scans on every ``interval``-th call; the held lists are swept with it.
        sweep = self._vrestore_count % (interval or 1) == 0
        super().restore_visible(start, num, interval)  # type: ignore[no-untyped-call]
        if sweep:
            with self.channel.conn_or_acquire() as client:
                held_messages.restore_lapsed(client, self.channel.queue_of)

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        """kombu's, but a record that is not one (anyone who can write to the broker can put
        it there) is dropped with a log line: kombu's raised in every sweep, in the event
        loop of every worker."""
        self.confirm()

        def restore_transaction(pipe: Any) -> None:
            raw = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)  # type: ignore[no-untyped-call]
            if not raw:
                return
            try:
                message, exchange, routing_key = loads(raw)  # type: ignore[no-untyped-call]
            except (ValueError, TypeError, RecursionError):
                logger.error("dropped delivery record %s: not a record: %r", tag, raw[:200])
                return
            self.channel._do_restore_message(message, exchange, routing_key, pipe, leftmost)

        with self.channel.conn_or_acquire(client) as connection:
            connection.transaction(restore_transaction, self.unacked_key)

    def confirm(self) -> None:
        """Read every outstanding reply: after this, Redis has applied every record sent."""
        self._send([], confirm=True)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                try:
                    # Closing a socket whose replies were not read resets it, and may drop
                    # what was still on its way to Redis.
                    self._confirm_sent()
                except Exception as exc:  # away: the records lapse, the claims hold
                    logger.warning("could not confirm the last acknowledgements: %s", exc)
                self._connection.close()
                self._connection = None
            self._unconfirmed.clear()

    def _send(self, commands: Sequence[tuple[Any, ...]], confirm: bool) -> None:
        """Send the transaction ``commands`` (and any whose connection failed) after reading
        the replies to those sent before; with ``confirm``, read its replies too."""
        with self._lock:
            if commands:
                self._unconfirmed.append(_Transaction([("MULTI",), *commands, ("EXEC",)]))
            elif not self._unconfirmed:
                return  # nothing to confirm: no connection needed
            failures = 0
            while True:
                try:
                    self._confirm_sent()
                    connection = self._own_connection()
                    for transaction in self._unconfirmed:
                        if transaction.pending is None:
                            transaction.pending = connection.send(transaction.commands)
                    if confirm:
                        self._confirm_sent()
                    return
                except OSError:  # the connection failed: all again, on a new one
                    for transaction in self._unconfirmed:
                        transaction.pending = None
                    failures += 1
                    if failures > SEND_RETRY.retries:
                        raise
                    time.sleep(SEND_RETRY.delay(failures))

    def _confirm_sent(self) -> None:
        """Read the replies to the transactions sent, oldest first: they are applied.
        Raises if the connection failed (the caller sends them again)."""
        while self._unconfirmed and self._unconfirmed[0].pending is not None:
            pending = self._unconfirmed[0].pending
            assert pending is not None
            replies = pending.get()
            self._unconfirmed.pop(0)
            executed = replies[-1]  # EXEC's: each command's reply, else why none ran
            refused = [reply for reply in (*replies[:-1], *(
                executed if isinstance(executed, list) else [executed]))
                if isinstance(reply, ReplyError)]
            if refused:
                logger.error("Redis refused a delivery record or an acknowledgement: %s",
                             refused[0])

    def _own_connection(self) -> Connection:
        if self._connection is None:
            # The broker's own URL, options and TLS included; retried by _send, which sends
            # every unconfirmed transaction again on a new connection.
            url = self.channel.distpool_url or url_of(self.channel.connection.client)
            self._connection = Connection(url, timeout=None, retry=RetryPolicy(retries=0))
        return self._connection


class _Transaction:
    """A delivery record or an acknowledgement (MULTI ... EXEC), and its replies once sent."""

    __slots__ = ("commands", "pending")

    def __init__(self, commands: list[tuple[Any, ...]]) -> None:
        self.commands = commands
        self.pending: PendingReplies | None = None


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
