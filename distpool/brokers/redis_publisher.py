"""Task messages onto a Redis broker with redis-py alone: no Celery, no kombu in the client.

Importing Celery and kombu, and Celery's first publish (which builds an event dispatcher even
with events off), took several times what the rest of a client's first pool takes to its
first result. On a Redis broker a publish is one ``LPUSH`` of a JSON
document onto the queue's list, so the client writes that document itself: a Celery
protocol-2 task message (``celery.app.amqp.AMQP.as_task_v2``), as kombu's ``Producer``
publishes it through the anonymous exchange to the queue (``send_task_message`` routes a
direct queue so) and kombu's Redis channel stores it (``Channel.basic_publish`` and
``_put``). Workers receive what Celery would have sent, field by field (the integration
tests compare the two), but for one thing: the body, JSON text itself, is not base64-encoded
a second time. kombu's channels decode a body by the ``body_encoding`` its message names,
and this one names none: a pass over every byte on each side, and a third of the size, less
(which a map of a few KiB an item feels).

What it does not do, a distpool client never asks of it: priorities (every message has
priority 0, the queue's list itself), ETAs and expiries (``as_task_v2``'s), Celery's
``before_task_publish`` / ``after_task_publish`` signals, and task-sent events (off). AMQP
brokers go through Celery (:mod:`.celery_publisher`).

It revokes likewise: Celery's ``control.revoke`` on a Redis broker is one ``PUBLISH`` of a
kombu message on the remote-control exchange's channel, which every worker's pidbox
subscribes to. Through Celery, ``terminate()`` imported Celery and kombu first, in the middle
of a Ctrl-C: 1.9 s of CPU in a fresh environment (no bytecode cached yet), over 10 s on a
loaded machine.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..config import Settings
from ..redis_client import version
from ..redis_client.connection import Connection
from ..retry import RetryPolicy
from ..wire.messages import TaskMessage
from .celery_app import TASK_NAME, urls

#: Tries after a publish's first fails, and the waits between them (0.4, 0.8, 1 s): a
#: publish that cannot reach the broker gives up after about two seconds. The AMQP publisher
#: (:mod:`.celery_publisher`) retries by the same policy.
PUBLISH_RETRY = RetryPolicy(retries=3, base=0.2, cap=1.0, jitter=False)

#: Celery's ``embed`` part of a protocol-2 body: no callbacks, errbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
#: The exchange of Celery's remote control (its mailbox ``celery``), and how long a broadcast
#: on it is valid (Celery's ``broadcast`` default timeout; workers drop it after that).
CONTROL_EXCHANGE = "celery.pidbox"
BROADCAST_EXPIRY = 1.0


def origin() -> str:
    """What Celery names a process that sends tasks (``celery.utils.nodenames``)."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


def message_document(message: TaskMessage, queue: str, origin: str,
                     delivery_tag: str) -> dict[str, Any]:
    """The document kombu's Redis channel pushes for ``message`` sent to ``queue``, keys in
    kombu's order, with the body as it is (no ``body_encoding``)."""
    task_id = message.task_id
    body = json.dumps((list(message.args), {}, _EMBED))
    headers: dict[str, Any] = {
        "lang": "py", "task": TASK_NAME, "id": task_id, "shadow": message.shadow, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [message.time_limit, message.soft_time_limit], "root_id": task_id,
        "parent_id": None, "argsrepr": message.argsrepr, "kwargsrepr": "{}",
        "origin": origin, "ignore_result": True, "replaced_task_nesting": 0,
        "stamped_headers": None, "stamps": {},
    }
    return {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,  # persistent: Celery's default
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "delivery_tag": delivery_tag,
        },
    }


def revoke_document(message_ids: Sequence[str], delivery_tag: str,
                    now: float) -> dict[str, Any]:
    """What Celery's ``control.revoke(message_ids, terminate=True, signal="SIGTERM")``
    publishes on a Redis broker, keys in kombu's order, the body as it is (as
    :func:`message_document`'s). (Why SIGTERM: see :func:`.celery_app.revoke`.)"""
    body = json.dumps({"method": "revoke",
                       "arguments": {"task_id": list(message_ids), "terminate": True,
                                     "signal": "SIGTERM"},
                       "destination": None, "pattern": None, "matcher": None})
    return {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        # clock: a Lamport clock workers move theirs past; a fresh Celery app sends 1.
        "headers": {"clock": 1, "expires": now + BROADCAST_EXPIRY},
        "properties": {
            "delivery_mode": 2,
            "delivery_info": {"exchange": CONTROL_EXCHANGE, "routing_key": ""},
            "priority": 0,
            "delivery_tag": delivery_tag,
        },
    }


class RedisPublisher:
    """Pushes task messages onto the queue of ``settings``'s Redis broker (the list of that
    name: distpool sets no ``global_keyprefix``), on a connection of its own (TLS and its
    options from the URL, as redis-py reads them: see :mod:`distpool.redis_client.endpoint`),
    whose replies may be ``reply_timeout`` seconds late (None: for ever)."""

    def __init__(self, settings: Settings, reply_timeout: float | None = None) -> None:
        broker_url, _ = urls(settings)
        self._connection = Connection(broker_url, timeout=reply_timeout, retry=PUBLISH_RETRY)
        self._queue = settings.queue
        self._origin = origin()

    def ping(self) -> None:
        """Raise if the broker cannot be reached, and
        :class:`~distpool.errors.UnsupportedRedisError` if its Redis is older than 6.2 (one
        ``INFO server``, in place of a ``PING``)."""
        version.check(self._connection, "broker")

    def publish(self, messages: Sequence[TaskMessage]) -> None:
        """Push ``messages`` in order, in one round trip; raise if the broker refuses them."""
        documents = [json.dumps(message_document(message, self._queue, self._origin,
                                                 str(uuid.uuid4())))
                     for message in messages]
        # One LPUSH per message, as kombu sends them: the workers take from the right.
        self._connection.run([("LPUSH", self._queue, document) for document in documents])

    def revoke(self, message_ids: Sequence[str]) -> None:
        """Stop the messages' tasks wherever they run: a broadcast every worker hears."""
        if not message_ids:
            return
        document = revoke_document(message_ids, str(uuid.uuid4()), time.time())
        # kombu's channel for a fanout exchange: its keyprefix_fanout, "/{db}.", and the name.
        channel = f"/{self._connection.endpoint.db}.{CONTROL_EXCHANGE}"
        self._connection.run([("PUBLISH", channel, json.dumps(document))])

    def close(self) -> None:
        self._connection.close()
