"""The Celery app that clients (to build messages) and workers (to run them) both start from.

It serves one generic task, whose arguments are JSON task envelopes; the settings suit long
tasks: one task reserved per process, acknowledged when done, another try when a process
dies. What differs between brokers comes from their profile (:mod:`.profiles`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..config import Settings
from .profiles import profile_for

if TYPE_CHECKING:  # imported when an app is built: a client on Redis never builds one
    from celery import Celery

#: The one task name of every distpool message.
TASK_NAME = "distpool.execute"
#: The longest an idle consumer blocks on the queue in one command (seconds).
IDLE_WAIT = 5


@functools.lru_cache(maxsize=8)
def client_app(settings: Settings) -> Celery:
    """The app a client builds its messages (AMQP) and revokes with, shared by the pools of a
    process that have the same settings. Building one, with its queues and task sender, would
    cost each ``Pool()`` on running workers more than the rest of its set-up; it holds no
    connection (each pool has its own)."""
    return new_app(settings)


def revoke(settings: Settings, message_ids: Sequence[str]) -> None:
    """Stop the messages' tasks wherever they run: a broadcast that every worker hears (its
    slots end the process running one; see :mod:`distpool.worker.slots.child`). On an AMQP
    broker; on Redis the client publishes the same broadcast itself (see
    :func:`.redis_publisher.revoke_document`).

    The signal is named as one that exists on every platform: a worker looks it up by name,
    and Windows has no SIGKILL. What ends the task is the worker's pool, not the signal (the
    slots end their process; prefork kills its pool process, see
    :mod:`distpool.worker.prefork`)."""
    if not message_ids:
        return
    app = client_app(settings)
    with app.connection_for_write() as connection:
        app.control.revoke(list(message_ids), connection=connection, terminate=True,
                           signal="SIGTERM")


def urls(settings: Settings) -> tuple[str, str]:
    """The broker and result store URLs; both must be set by now."""
    if settings.broker_url is None or settings.result_url is None:
        raise ValueError("the Celery backend needs a broker URL and a result URL")
    return settings.broker_url, settings.result_url


def renews_holds(broker_url: str) -> bool:
    """Whether a worker must renew its hold on the messages it has taken: kombu's Redis
    transport hands a message out again once its hold is older than the visibility
    timeout, and never renews it on its own."""
    return profile_for(broker_url).holds_messages


def flags_redeliveries(broker_url: str) -> bool:
    """Whether every second delivery of a message through this broker says it is one."""
    return profile_for(broker_url).flags_redeliveries


def new_app(settings: Settings, holder: str | None = None, sweepers: int = 1) -> Celery:
    """A Celery app for ``settings``. ``holder``: a worker's consumer id on a Redis broker
    (see :mod:`.held_messages`); ``sweepers``: see :func:`transport_options`."""
    from celery import Celery

    broker_url, _ = urls(settings)
    app = Celery("distpool", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_transport=profile_for(broker_url).transport,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings, holder, sweepers),
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
        # A running task survives a broker reconnection: its claim (see worker/claims.py),
        # not a kill, keeps a second delivery of its message from running it twice.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # distpool's task has no rate limit: the worker need not look for one per message.
        worker_disable_rate_limits=True,
    )
    return app


def transport_options(settings: Settings, holder: str | None = None,
                      sweepers: int = 1) -> dict[str, Any]:
    """Celery's ``broker_transport_options`` for ``settings`` (see :func:`new_app`).

    Every consumer sweeps the queue's lapsed holds (a dead consumer's messages) now and then:
    ``sweepers`` consumers that take turns (the slots of one node) each sweep that many times
    less often, so a node sweeps as often as one worker would (see the transport's QoS).
    Every sweep is five commands: at one per slot per hold renewal interval, they were half
    of an idle slot's traffic."""
    return {
        "visibility_timeout": settings.worker_lost_timeout,
        "unacked_restore_interval": hold_renewal_interval(settings),
        "distpool_sweepers": max(1, sweepers),
        "unacked_restore_throttle": 1,
        # How long an idle consumer's blocking move waits before it asks again: kombu's
        # 1 s was most of an idle slot's traffic. Never longer than the hold renewal
        # interval, which the consumer's waits also pace.
        "polling_interval": min(IDLE_WAIT, hold_renewal_interval(settings)),
        "distpool_holder": holder,
        # For the connection that records deliveries and acknowledgements (redis_qos).
        "distpool_url": urls(settings)[0],
    }



def hold_renewal_interval(settings: Settings) -> int:
    """How often holds are renewed, and lapsed ones swept: four times per timeout."""
    return max(1, int(settings.worker_lost_timeout / 4))
