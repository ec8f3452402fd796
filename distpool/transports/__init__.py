"""What carries a pool's tasks and results: :func:`connect` gives the publisher and the
result store that the settings call for (see :mod:`.base` for the seam they make)."""

from __future__ import annotations

import os
from typing import NamedTuple

from ..config import Settings, mask_url
from ..errors import BrokerUnavailableError, UnsupportedRedisError
from ..wire.signing import Signer
from .base import Publisher, ResultStore, RunHolds

#: How late the broker's or the result store's reply may be before the client's call fails
#: (a pop's, beyond its own wait): a frozen Redis (stopped, its VM paused, or cut off by a
#: partition that drops packets) would otherwise hold the caller, or the collector, for ever.
#: The collector goes on trying, and fails the tasks in flight after pool_ttl of that.
REPLY_TIMEOUT = 10.0


class Transport(NamedTuple):
    """A pool's publisher and result store, and the signer of what travels between them and
    the workers."""

    publisher: Publisher
    store: ResultStore
    signer: Signer


def connect(settings: Settings) -> Transport:
    """The transport the settings call for: in this process (eager), else a broker's
    publisher and the Redis store, both reached before this returns
    (:class:`~distpool.errors.BrokerUnavailableError` if one cannot be). Celery and kombu are
    imported only for an AMQP broker.

    Raises :class:`~distpool.errors.SecretKeyMissingError` for a broker without a key,
    unless the settings say to run insecure, and
    :class:`~distpool.errors.UnsupportedRedisError` for a Redis older than 6.2 (the broker's
    or the result store's).
    """
    if settings.eager:
        from .eager import EagerPublisher, MemoryStore

        # Envelopes and records take the same signed round trip as on a real cluster.
        signer = Signer(settings.secret if settings.secret is not None else os.urandom(32))
        memory = MemoryStore()
        return Transport(EagerPublisher(memory, signer), memory, signer)
    settings.require_secret()
    from ..brokers.celery_app import urls
    from ..brokers.profiles import REDIS, profile_for
    from ..store.redis_store import RedisStore

    broker_url, result_url = urls(settings)
    store = RedisStore(result_url, REPLY_TIMEOUT)
    publisher: Publisher
    try:
        if profile_for(broker_url) is REDIS:
            from ..brokers.redis_publisher import RedisPublisher

            publisher = RedisPublisher(settings, REPLY_TIMEOUT)
        else:
            from ..brokers.celery_publisher import CeleryPublisher

            publisher = CeleryPublisher(settings)
    except BaseException:
        store.close()
        raise
    # A Redis ping is an INFO server, which also refuses a Redis too old for distpool.
    for what, url, ping in (("result store", result_url, store.ping),
                            ("broker", broker_url, publisher.ping)):
        try:
            ping()
        except Exception as exc:
            for closing in (publisher, store):
                try:
                    closing.close()
                except Exception:  # noqa: S110 - already failing with a better error
                    pass
            if isinstance(exc, UnsupportedRedisError):  # it was reached: said as it is
                raise
            raise BrokerUnavailableError(
                f"cannot reach the {what} at {mask_url(url)}: {exc}") from None
    return Transport(publisher, store, Signer(settings.secret))


def run_holds(settings: Settings) -> RunHolds:
    """A connection of its own to the result store, where a named run is held for the
    clients of every host (a pool's own connections close with it, before its run is let
    go)."""
    from ..brokers.celery_app import urls
    from ..store.redis_store import RedisStore
    return RedisStore(urls(settings)[1], REPLY_TIMEOUT)


__all__ = ["Publisher", "ResultStore", "RunHolds", "Transport", "connect", "run_holds"]
