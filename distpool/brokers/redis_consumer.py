"""A consumer of one Redis queue that keeps each message in its held list until it is done:
the Redis side of a slot's own consumer (:mod:`distpool.worker.slots.intake`).

kombu's consumer moves a message into the consumer's held list, then into its delivery
records (a transaction of five commands), and removes the record once the message is
acknowledged (four more), each step handed between the worker's threads. Here the held list
is the only record: :meth:`HeldQueue.take` moves the next message into it, and
:meth:`HeldQueue.done` takes it out again, sent with the next take, in the same write. The
message is in Redis's keeping at every instant, as with kombu's (see :mod:`.held_messages`):
in the queue, or in the held list of a consumer whose lease is renewed while it lives. Once
the lease lapses, any consumer's sweep puts the list back on the queue, and the parent of a
slot that dies does so at once; either flags the messages as second deliveries.

The blocking connection is distpool's own (:mod:`distpool.redis_client`), and it is not
retried on its own: a take whose reply is lost may have moved a message all the same, so
after a failure the held list goes back on the queue before the next take.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..redis_client.connection import Connection
from ..retry import RetryPolicy
from . import held_messages

logger = logging.getLogger("distpool")

#: How much longer than its own timeout a take waits for Redis's reply.
REPLY_MARGIN = 10.0


class HeldQueue:
    """The queue ``queue`` of the Redis at ``url``, consumed by ``holder`` into its held
    list, whose lease of ``lease`` seconds each take renews when a quarter of it has gone
    (a task that runs longer needs it renewed meanwhile, by another thread). For one thread,
    but :meth:`interrupt`, which another may call."""

    def __init__(self, url: str, queue: str, holder: str, lease: float) -> None:
        self.queue = queue
        self.holder = holder
        self._lease = lease
        self._lease_renewed_at = float("-inf")
        self._url = url
        self._held = held_messages.held_list(holder)
        self._connection = Connection(url, retry=RetryPolicy(retries=0))
        self._interrupted = False
        self._done: bytes | None = None  # taken out of the held list with the next take
        self._suspect = True  # what the held list holds is not known: put it back first

    def take(self, timeout: int) -> bytes | None:
        """The next message, moved into the held list, waiting up to ``timeout`` seconds
        for one (None if none came). Sends the removal of the one before, if it is done.
        Raises what the connection raises; the held list then goes back before the next
        take."""
        with self._suspect_on_failure():
            if self._suspect:
                self._put_back_held()  # which forgets the holder: its lease is renewed now
            commands: list[tuple[Any, ...]] = []
            if self._done is not None:
                commands.append(("LREM", self._held, -1, self._done))
            now = time.monotonic()
            if now - self._lease_renewed_at >= self._lease / 4:
                commands.append(("ZADD", held_messages.HOLDERS, time.time() + self._lease,
                                 self.holder))
                self._lease_renewed_at = now
            commands.append(("BLMOVE", self.queue, self._held, "RIGHT", "LEFT", timeout))
            replies = self._connection.run(commands, reply_timeout=timeout + REPLY_MARGIN)
        self._done = None
        item: bytes | None = replies[-1]
        return item

    def done(self, item: bytes) -> None:
        """``item``, taken last, is done with: out of the held list with the next take (if
        this process dies first, it goes back on the queue, where its claim, marked done,
        keeps it from running again)."""
        self._done = item

    def drop(self, item: bytes) -> None:
        """Out of the held list at once: ``item`` is not a message."""
        with self._suspect_on_failure():
            self._connection.run([("LREM", self._held, -1, item)])

    def put_back(self, item: bytes) -> None:
        """``item``, the message held, back at the head of the queue, unrun, flagged as a
        second delivery."""
        with self._suspect_on_failure():
            self._put_back_held()

    def interrupt(self) -> None:
        """End a take blocked in another thread, for good: it raises, and so does every
        call after it but :meth:`close`."""
        self._interrupted = True
        self._connection.close()

    def close(self) -> None:
        """Send what is done, put back what is held, and close the connection (a new one
        is opened for these if :meth:`interrupt` closed it)."""
        connection = self._connection
        if self._interrupted:
            connection = Connection(self._url, retry=RetryPolicy(retries=2))
        try:
            if self._done is not None:
                connection.run([("LREM", self._held, -1, self._done)])
            self._put_back_held(connection)
        except Exception as exc:  # the broker is away: the lease lapses, others sweep it
            logger.warning("could not put back the messages held by %s: %s", self.holder,
                           exc)
        finally:
            connection.close()
            self._connection.close()

    @contextmanager
    def _suspect_on_failure(self) -> Iterator[None]:
        """What the held list holds is not known after a failed command: the next take puts
        it back first (a done message among it is skipped where it lands: its claim is
        marked done; what is not a message is dropped)."""
        try:
            yield
        except BaseException:
            self._suspect = True
            raise

    def _put_back_held(self, connection: Connection | None = None) -> None:
        held_messages.restore(_Commands(connection or self._connection), self.holder,
                              self._queue_of)
        self._suspect = False
        self._lease_renewed_at = float("-inf")

    def _queue_of(self, payload: dict[str, Any]) -> str | None:
        # A held message goes back to the queue it was taken from, whatever it says.
        return self.queue


class _Commands:
    """The few redis-py methods :mod:`.held_messages` calls, on a distpool connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def lrange(self, key: str, start: int, end: int) -> list[bytes]:
        return self._call("LRANGE", key, start, end)  # type: ignore[no-any-return]

    def lrem(self, key: str, count: int, value: bytes) -> int:
        return self._call("LREM", key, count, value)  # type: ignore[no-any-return]

    def eval(self, script: str, keys: int, *args: Any) -> Any:
        return self._call("EVAL", script, keys, *args)

    def _call(self, *command: Any) -> Any:
        [reply] = self._connection.run([command])
        return reply


def parse(item: bytes) -> dict[str, Any] | None:
    """The message ``item`` is, as kombu's Redis channel pushes one (the document of
    :func:`.redis_publisher.message_document`), its body as text (decoded, if kombu's
    producer encoded it in base64), or None if it is not one."""
    try:
        message = json.loads(item)
        properties = message["properties"]
        if not (isinstance(message["headers"], dict) and isinstance(message["body"], str)
                and isinstance(properties, dict)
                and isinstance(properties["delivery_info"], dict)):
            return None
        if properties.get("body_encoding") == "base64":
            message["body"] = base64.b64decode(message["body"], validate=True).decode()
    except (ValueError, RecursionError, KeyError, TypeError):
        return None
    return message  # type: ignore[no-any-return]
