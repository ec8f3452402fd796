"""What becomes of the messages of a slot that is gone: the broker's part of the slot
parent's work (:class:`~.parent.Recovery`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kombu.connection import Connection

from ...brokers.celery_app import new_app, urls
from ...brokers.profiles import profile_for
from ...config import Settings
from ...store.redis_store import RedisStore
from .state import Running

logger = logging.getLogger("distpool")


class SlotRecovery:
    """What the parent of slots (:mod:`.parent`) does with the message of a slot that
    died, or that it kills for running past the message's hard time limit.

    A timed-out message is marked so in the store before its slot is killed, so whichever
    worker receives it next fails its tasks with ``TaskTimeoutError`` instead of running
    them (see :mod:`distpool.worker.runner`). On Redis the message of a slot that is gone
    goes back to the head of the queue at once, as kombu does when a worker rejects a message;
    otherwise it would wait for the dead slot's hold to lapse (``worker_lost_timeout``). On
    AMQP the broker re-queues it itself when the slot's connection drops.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        broker_url, self._result_url = urls(settings)
        self._restores = profile_for(broker_url).requeues_dead_slots
        # Made on first use, and closed before each slot is forked (see parent.start).
        self._store: RedisStore | None = None
        self._connection: Connection | None = None

    def timed_out(self, running: Running) -> None:
        try:
            if self._store is None:
                self._store = RedisStore(self._result_url)
            self._store.mark_timed_out(running.message_id)
        except Exception as exc:  # then it runs again, and times out again
            logger.error("could not mark message %s as timed out: %s", running.message_id, exc)

    def pools_gone(self, pool_ids: Iterable[str]) -> set[str]:
        """Those of ``pool_ids`` that have ended (terminated, or their client is gone); none
        while the store cannot be asked."""
        try:
            if self._store is None:
                self._store = RedisStore(self._result_url)
            return {pool_id for pool_id in pool_ids if not self._store.pool_is_live(pool_id)}
        except Exception as exc:  # the store is away: not a reason to kill a task
            logger.info("could not ask which pools have ended: %s", exc)
            return set()

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

    def disconnect(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._connection is not None:
            self._connection.close()  # type: ignore[no-untyped-call]
            self._connection = None

    def _channel(self) -> Any:
        if self._connection is None:
            self._connection = new_app(self._settings).connection_for_write()
        return self._connection.default_channel
