"""Task messages through Celery and kombu: how a client publishes on an AMQP broker.

A Redis broker needs neither (:mod:`.redis_publisher`); importing this module imports both.

Fork safety: it never touches ``app.pool`` or kombu's global pools. Celery registers an
after-fork hook the first time they are used, and that hook can hang a ``multiprocessing``
child forked later from the same process (users mix both). It owns one plain connection,
used by the pool's dispatcher thread alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kombu.connection import Connection
from kombu.messaging import Producer

from ..config import Settings
from ..wire.messages import TaskMessage
from .celery_app import TASK_NAME, client_app, revoke
from .profiles import profile_for
from .redis_publisher import PUBLISH_RETRY


class CeleryPublisher:
    """Publishes task messages onto the queue of ``settings``'s broker."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app = app = client_app(settings)
        self._queue = app.amqp.queues[app.conf.task_default_queue]
        self._send = app.amqp.send_task_message
        self._connection: Connection = app.connection_for_write()
        self._producer: Producer | None = None
        # A Redis queue needs no declaring before messages are pushed onto it, and kombu's
        # check that it was declared copies and binds the queue object on every publish.
        self._declare: list[Any] | None = (
            None if profile_for(app.conf.broker_url).declares_queues else [])

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""
        self._connection.ensure_connection(  # type: ignore[no-untyped-call]
            max_retries=2, interval_start=0.5, interval_step=0.5, timeout=5)

    def publish(self, messages: Sequence[TaskMessage]) -> None:
        if self._producer is None:
            self._producer = Producer(self._connection)  # type: ignore[no-untyped-call]
        for message in messages:
            built = self._app.amqp.as_task_v2(
                message.task_id, TASK_NAME, args=tuple(message.args),
                argsrepr=message.argsrepr, kwargsrepr="{}", ignore_result=True,
                shadow=message.shadow,
                soft_time_limit=message.soft_time_limit, time_limit=message.time_limit)
            self._send(self._producer, TASK_NAME, built, queue=self._queue,
                       declare=self._declare, retry=True,
                       retry_policy=PUBLISH_RETRY.as_kombu())

    def revoke(self, message_ids: Sequence[str]) -> None:
        revoke(self._settings, message_ids)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.release()  # type: ignore[no-untyped-call]
        self._connection.release()  # type: ignore[no-untyped-call]
