"""The bootsteps distpool adds to Celery's: registration, and renewing holds."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

from ..brokers.celery_app import urls
from ..config import Settings, mask_url

logger = logging.getLogger("distpool")

#: How often a worker renews its registration, and how long the registration lasts.
REGISTRATION_INTERVAL = 10.0
REGISTRATION_TTL = 3 * REGISTRATION_INTERVAL


def registration_step(settings: Settings) -> type:
    """A consumer bootstep that keeps the worker registered, with its slots, in the store,
    while it consumes: clients count the registered slots, and fail the tasks nobody takes
    once none is left (:mod:`distpool.client.watch`). A worker that cannot reach its broker
    (down, or at ``maxclients``) stops renewing, and lapses after ``REGISTRATION_TTL``."""

    _, result_url = urls(settings)

    class Registration(bootsteps.StartStopStep):  # type: ignore[misc]
        label = "distpool registration"
        # Started once the task consumer is, again after each reconnection.
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, c: Any, **kwargs: Any) -> None:
            super().__init__(c, **kwargs)
            self._store = c.app.distpool_runner.store()
            self._timer: Any = None

        def start(self, c: Any) -> None:
            self._register(c)
            self._timer = c.timer.call_repeatedly(REGISTRATION_INTERVAL, self._register, (c,))

        def stop(self, c: Any) -> None:  # the connection was lost: the registration lapses
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def shutdown(self, c: Any) -> None:
            self.stop(c)
            try:
                self._store.unregister_worker(settings.queue, c.hostname)
            except Exception as exc:  # the store may be gone at shutdown; it expires anyway
                logger.warning("could not unregister %s: %s", c.hostname, exc)

        def _register(self, c: Any) -> None:
            try:
                self._store.register_worker(settings.queue, c.hostname,
                                            c.controller.concurrency, REGISTRATION_TTL)
            except Exception as exc:
                logger.warning("could not register %s in %s: %s", c.hostname,
                               mask_url(result_url), exc)

    return Registration


def hold_renewal_step(interval: int) -> type:
    """A worker bootstep that keeps renewing its hold on the messages it has taken."""

    class _HoldRenewal(bootsteps.StartStopStep):  # type: ignore[misc]
        """kombu's Redis transport records each delivered, unacknowledged message in the
        ``unacked_index`` sorted set with its delivery time, and gives it to another worker
        once that is older than the visibility timeout. Setting the time to now, for every
        message this node holds, keeps them while the node lives. It goes through the task
        consumer's own channel: no connection of its own, and the channel's key names and
        connection settings (TLS, key prefix) whatever they are."""

        label = "distpool hold renewal"

        def __init__(self, w: Any, **kwargs: Any) -> None:
            super().__init__(w, **kwargs)
            self._timer: Any = None

        def start(self, w: Any) -> None:
            self._timer = w.timer.call_repeatedly(interval, self._renew, (w,))

        def stop(self, w: Any) -> None:
            if self._timer is not None:
                self._timer.cancel()

        def _renew(self, w: Any) -> None:
            held = list(worker_state.active_requests) + list(worker_state.reserved_requests)
            tags = {request.message.delivery_tag for request in held}
            tags.discard(None)
            consumer = getattr(w.consumer, "task_consumer", None)
            if not tags or consumer is None:  # nothing held, or reconnecting
                return
            now = time.time()
            channel = consumer.channel
            try:
                with channel.conn_or_acquire() as client:
                    client.zadd(channel.unacked_index_key, {tag: now for tag in tags}, xx=True)
            except Exception as exc:  # the broker is away: Celery reconnects on its own
                logger.warning("could not renew the hold on %d messages: %s", len(tags), exc)

    return _HoldRenewal
