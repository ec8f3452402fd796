"""The interface between a pool's engine and a transport."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import Any

from ..wire.envelope import Signer, TaskEnvelope
from ..wire.payload import BlobRef, Payload


class Backend(abc.ABC):
    """Moves task envelopes to workers and result records back, for any number of pools.

    Threads: the engine calls :meth:`publish` from its dispatcher thread only, and
    :meth:`fetch_results` and :meth:`refresh_pool` from its collector thread only; the other
    methods may come from any thread. Implementations keep connections accordingly.
    """

    @property
    @abc.abstractmethod
    def signer(self) -> Signer:
        """Signs the envelopes sent, and authenticates the result records received."""

    @abc.abstractmethod
    def worker_slots(self) -> int:
        """Worker processes serving this backend's queue now; 0 when none is known."""

    @abc.abstractmethod
    def refresh_pool(self, pool_id: str, info: dict[str, Any]) -> bool:
        """Mark the pool live, with what its client reports of it (``distpool status``);
        workers run its tasks only while it is, so the client repeats this in time. Return
        whether it was still marked live: False for a new pool, and for one whose mark was
        lost meanwhile, by a store that restarted or a lapse, when workers may have dropped
        its tasks."""

    @abc.abstractmethod
    def stage(self, pool_id: str, message_id: str,
              envelopes: Sequence[TaskEnvelope]) -> list[TaskEnvelope]:
        """Put what a message's envelopes carry where the workers will find it, and return
        the envelopes as they travel (large payloads replaced by references to blobs). The
        message holds its blobs until :meth:`release`. Raises, for this message alone, if
        its data cannot be stored (:class:`~distpool.errors.PayloadTooLargeError`: too large
        for the store)."""

    @abc.abstractmethod
    def release(self, pool_id: str, message_ids: Sequence[str]) -> None:
        """The messages are finished (their results are in, or they failed): what
        :meth:`stage` stored for them may go. Quick, and never raises: the deletion itself
        waits for the backend's next round trip."""

    @abc.abstractmethod
    def fetch_result(self, pool_id: str, task_id: str, ref: BlobRef) -> Payload:
        """The result payload a record of task ``task_id`` refers to, checked against
        ``ref`` (:class:`~distpool.errors.EnvelopeError` if missing or altered), and then
        deleted. Called from the pool's delivery thread."""

    @abc.abstractmethod
    def publish(self, messages: Sequence[Sequence[TaskEnvelope]]) -> None:
        """Hand messages of one or more tasks to the workers, in order; raise if the broker
        refuses them. A message's id is the task id of its first envelope."""

    @abc.abstractmethod
    def fetch_results(self, pool_id: str, timeout: float) -> list[bytes]:
        """Result records of the pool: block up to ``timeout`` for the first, take what else
        is waiting, and return early (possibly empty) after :meth:`wake`."""

    @abc.abstractmethod
    def message_states(self, pool_id: str, message_ids: Sequence[str]) -> list[str | None]:
        """What the workers say of each message: None while nobody has claimed it,
        :data:`~distpool.wire.envelope.MESSAGE_DONE` once its results are on their way,
        else a claim that changes each time its running holder renews it (see
        :mod:`distpool.client.watch`)."""

    @abc.abstractmethod
    def wake(self, pool_id: str) -> None:
        """Make a blocked :meth:`fetch_results` of the pool return now."""

    @abc.abstractmethod
    def cancel(self, pool_id: str, message_ids: Iterable[str]) -> None:
        """Stop the pool everywhere: no queued task of it starts, running ones are killed."""

    @abc.abstractmethod
    def close_pool(self, pool_id: str) -> None:
        """Remove everything the pool left in the broker and the result store."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections. The backend is not used afterwards."""
