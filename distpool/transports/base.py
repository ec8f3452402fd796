"""The seam between a pool's engine and what carries its tasks and results.

A pool's engine (:mod:`distpool.client.engine`) holds a :class:`Publisher`, which carries task
messages to the workers, and a :class:`ResultStore`, which carries results back and holds
what the pool shares with its workers: its liveness, the claims on its messages, its blobs.
On a real cluster they are a broker's publisher (:mod:`distpool.brokers`) and the Redis
store (:mod:`distpool.store.redis_store`), which the workers use too; in eager mode, one
that runs each task as it is published, and one in memory (:mod:`.eager`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from ..wire.messages import TaskMessage
from ..wire.payload import BlobRef, Payload


class Publisher(Protocol):
    """Carries task messages to the workers."""

    def publish(self, messages: Sequence[TaskMessage]) -> None:
        """Hand the messages to the workers, in order; raise if the broker refuses them."""

    def revoke(self, message_ids: Sequence[str]) -> None:
        """Stop the messages' tasks wherever they run (``Pool.terminate``)."""

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    def close(self) -> None:
        """Release the connection; the publisher is not used afterwards."""


class Blobs(Protocol):
    """Payloads too large for a message, stored per pool and named (see
    :mod:`distpool.store.blobs`)."""

    def put(self, pool_id: str, name: str, payload: Payload, what: str,
            ttl: float | None = None) -> BlobRef:
        """Store ``payload`` (``what`` it is, for errors) as the pool's blob ``name``."""

    def take(self, pool_id: str, name: str, ref: BlobRef) -> Payload:
        """The pool's blob ``name``, checked against ``ref``, then deleted."""

    def delete(self, pool_id: str, blobs: Iterable[tuple[str, int]],
               wait: bool = True) -> None:
        """Delete the pool's blobs, given as ``(name, size)``."""


class RunHolds(Protocol):
    """Where the clients of every host see who holds a named run (the result store)."""

    def hold_run(self, name: str, holder: str, ttl: float) -> str | None:
        """Hold the named run ``name`` for ``holder`` for ``ttl`` seconds more, unless
        another holds it: then that holder (else None)."""

    def release_run(self, name: str, holder: str) -> None:
        """Let the run go, if ``holder`` holds it."""

    def close(self) -> None:
        """Release the connections."""


class ResultStore(Protocol):
    """Carries result records back to a pool's client, and what the client and the workers
    share of the pool."""

    @property
    def blobs(self) -> Blobs:
        """The pools' large payloads."""

    def refresh_pool(self, pool_id: str, ttl: float, info: dict[str, Any],
                     keep: float | None = None) -> bool:
        """Mark the pool live for ``ttl`` seconds more (``keep``, if longer: a named run's
        resume window), with what its client reports of it (``distpool status``) for
        ``ttl``; workers run its tasks only while it is. Return whether it was still marked
        live: False for a new pool, and for one whose mark was lost meanwhile (a store that
        restarted, a lapse), when workers may have dropped its tasks."""

    def resume_pool(self, pool_id: str) -> list[bytes] | None:
        """Take over the pool of a client that died (a named run's): the result records it
        left, which the collector will read again; None if the pool is not live any more."""

    def pop_results(self, pool_id: str, timeout: float) -> list[bytes]:
        """The pool's result records: block up to ``timeout`` for the first, take what else
        waits, and return early (possibly empty) after :meth:`wake`."""

    def wake(self, pool_id: str) -> None:
        """Make a blocked :meth:`pop_results` of the pool return now."""

    def message_states(self, pool_id: str, message_ids: list[str]) -> list[str | None]:
        """What the workers say of each message: None while nobody has claimed it,
        :data:`~distpool.wire.envelope.MESSAGE_DONE` once its results are on their way, else
        a claim that changes each time its running holder renews it."""

    def worker_slots(self, queue: str) -> int:
        """Worker processes serving ``queue`` now; 0 when none is known."""

    def close_pool(self, pool_id: str) -> None:
        """Remove everything of the pool: its liveness (its queued tasks are then skipped),
        its results, claims and blobs."""

    def ping(self) -> None:
        """Raise if the store cannot be reached."""

    def close(self) -> None:
        """Release the connections; the store is not used afterwards."""
