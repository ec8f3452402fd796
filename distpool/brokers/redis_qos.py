"""kombu's record of the messages a consumer was delivered and has not acknowledged, on Redis,
sent without waiting for Redis's replies (see :class:`QoS`); used by :mod:`.redis_transport`'s
channel.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from ..redis_client.connection import Connection, PendingReplies
from ..redis_client.protocol import ReplyError
from ..retry import RetryPolicy
from . import held_messages
from .redis_connections import url_of

logger = logging.getLogger("distpool")

#: New connections tried, at once, before a delivery record or an acknowledgement fails.
SEND_RETRY = RetryPolicy(retries=2, base=0.0, jitter=False)

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
