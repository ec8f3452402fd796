"""One decision per broker URL: what distpool does on each kind of broker, made once, from
the URL's scheme.

========================  ==========================  ========================
                          Redis (``redis://``,        AMQP (``amqp://``,
                          ``rediss://``)              ``amqps://``)
========================  ==========================  ========================
transport                 distpool's: held lists      kombu's, from the URL
holds to renew            yes (kombu's ack            no: the broker holds
                          emulation)                  unacknowledged messages
a dead slot's messages    put back by its parent      re-queued by the broker
second deliveries         always flagged              the flag can be lost
queues declared           no (a list needs none)      yes
doubles as result store   yes                         no: ``result_url`` needed
a slot takes messages     itself (a consumer of its   through Celery's
                          own, unless ``-E``)         consumer
========================  ==========================  ========================

``redis+socket://`` and ``sentinel://`` brokers are refused: distpool's transport has not been
tested on them, and kombu's own pop loses a message when its consumer dies at the wrong
instant (see :mod:`.held_messages`). A Redis on a Unix socket can be the *result store*
(``unix:///path?db=N``, see :mod:`distpool.redis_client.endpoint`); Sentinel cannot.

This module imports nothing outside the standard library, so that settings can be checked
without loading Celery.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BrokerProfile:
    name: str
    #: Celery's ``broker_transport`` (None: kombu chooses it from the URL).
    transport: str | None
    #: Messages taken stay in kombu's delivery records until acknowledged: workers renew
    #: their holds, and sweep those of dead consumers.
    holds_messages: bool
    #: The parent of a slot that died puts its messages back at once (else the broker does).
    requeues_dead_slots: bool
    #: Every second delivery of a message says it is one.
    flags_redeliveries: bool
    #: A publish declares its queue first.
    declares_queues: bool
    #: With no ``result_url``, the broker holds results too.
    stores_results: bool
    #: A slot takes its messages itself (:mod:`distpool.worker.slots.intake`), not through
    #: Celery's consumer (which it still runs, for remote control).
    slots_take_messages: bool


REDIS = BrokerProfile("Redis", "distpool.brokers.redis_transport:Transport",
                      holds_messages=True, requeues_dead_slots=True, flags_redeliveries=True,
                      declares_queues=False, stores_results=True, slots_take_messages=True)
# RabbitMQ can lose the redelivered flag when it recovers a message across its own restart.
AMQP = BrokerProfile("AMQP", None, holds_messages=False, requeues_dead_slots=False,
                     flags_redeliveries=False, declares_queues=True, stores_results=False,
                     slots_take_messages=False)

_PROFILES = {"redis": REDIS, "rediss": REDIS, "amqp": AMQP, "amqps": AMQP, "pyamqp": AMQP}


def profile_for(broker_url: str) -> BrokerProfile:
    """The profile of the broker at ``broker_url``; ValueError, naming the scheme and what
    works instead, for a broker distpool does not support."""
    scheme = broker_url.split("://", 1)[0].lower() if "://" in broker_url else ""
    profile = _PROFILES.get(scheme)
    if profile is None:
        raise ValueError(
            f"distpool does not support {scheme or broker_url!r} brokers: use redis://, "
            "rediss:// (TLS) or amqp:// / amqps:// (RabbitMQ); a Redis on a Unix socket "
            "can be the result store (result_url='unix:///path?db=N'), not the broker")
    return profile
