"""kombu's Redis transport, with one redis-py client object per channel instead of one per
command.

Outside its event loop, kombu's Redis channel builds a new ``redis.Redis`` object for every
command it sends: each publish, and on a worker each delivery's and each acknowledgement's
bookkeeping. Building one costs about 0.3 ms of CPU (it copies a table of some 170 response
callbacks), as much as the command's round trip to Redis. The object holds no connection of
its own; the channel's connection pool does, and it is thread-safe. So one object serves
every command of the channel exactly as fresh ones would, and it is rebuilt whenever the
channel replaces its pool (after a reconnection).

Used for ``redis://`` brokers (see ``create_app``); on other schemes kombu chooses the
transport from the URL itself, and its own settings (TLS for ``rediss://``) depend on that.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

#: The value of Celery's ``broker_transport`` setting that selects this transport.
TRANSPORT = f"{__name__}:Transport"


def serves(broker_url: str) -> bool:
    """Whether this transport carries the broker at ``broker_url``."""
    return broker_url.startswith("redis://")


class Channel(kombu_redis.Channel):
    _command_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        cached = self._command_client
        if cached is None or cached.connection_pool is not self.pool:
            cached = self._command_client = self._create_client()  # type: ignore[no-untyped-call]
        yield cached


class Transport(kombu_redis.Transport):
    Channel = Channel
