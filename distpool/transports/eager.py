"""The eager transport, for users' unit tests: each task runs as it is published, in the
engine's dispatcher thread, and its result record waits in memory.

No broker, no worker process, but the same messages as on a cluster, signed and read back
as a worker reads them, with their large payloads as blobs, and the same
:func:`distpool.worker.execute.execute`: what cannot travel fails here too.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import EnvelopeError
from ..store.keys import pool_of
from ..wire.envelope import MESSAGE_DONE, TaskEnvelope
from ..wire.messages import TaskMessage
from ..wire.payload import BlobRef, Payload
from ..wire.signing import Signer
from ..worker import execute


class MemoryBlobs:
    """The pools' blobs, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[tuple[str, str], Payload] = {}

    def put(self, pool_id: str, name: str, payload: Payload, what: str,
            ttl: float | None = None) -> BlobRef:
        with self._lock:
            self._blobs[pool_id, name] = payload
        return payload.ref()

    def get(self, pool_id: str, name: str, ref: BlobRef) -> Payload:
        with self._lock:
            payload = self._blobs.get((pool_id, name))
        if payload is None or payload.ref() != ref:
            raise EnvelopeError(f"blob {ref.digest[:16]} is missing, or not what its "
                                "reference names")
        return payload

    def take(self, pool_id: str, name: str, ref: BlobRef) -> Payload:
        try:
            return self.get(pool_id, name, ref)
        finally:
            self.delete(pool_id, [(name, ref.size)])

    def delete(self, pool_id: str, blobs: Iterable[tuple[str, int]],
               wait: bool = True) -> None:
        with self._lock:
            for name, _ in blobs:
                self._blobs.pop((pool_id, name), None)

    def drop_pool(self, pool_id: str) -> None:
        with self._lock:
            for key in [key for key in self._blobs if key[0] == pool_id]:
                del self._blobs[key]


class MemoryStore:
    """The result store, in memory: each pool's records, and its blobs."""

    def __init__(self) -> None:
        self.blobs = MemoryBlobs()
        self._cond = threading.Condition()
        self._results: dict[str, collections.deque[bytes]] = collections.defaultdict(
            collections.deque)

    def push_results(self, pool_id: str, records: list[bytes]) -> None:
        with self._cond:
            self._results[pool_id].extend(records)
            self._cond.notify_all()

    def refresh_pool(self, pool_id: str, ttl: float, info: dict[str, Any],
                     keep: float | None = None) -> bool:
        return True  # nothing here can lose it

    def resume_pool(self, pool_id: str) -> list[bytes] | None:
        return None  # nothing here outlives its client

    def pop_results(self, pool_id: str, timeout: float) -> list[bytes]:
        with self._cond:
            queue = self._results[pool_id]
            if not queue:
                self._cond.wait(timeout)
            records = list(queue)
            queue.clear()
        return records

    def wake(self, pool_id: str) -> None:
        with self._cond:
            self._cond.notify_all()

    def message_states(self, pool_id: str, message_ids: list[str]) -> list[str | None]:
        return [MESSAGE_DONE] * len(message_ids)  # each ran when it was published

    def worker_slots(self, queue: str) -> int:
        return 0  # unknown: the pool defaults to the CPU count, as multiprocessing does

    def close_pool(self, pool_id: str) -> None:
        with self._cond:
            self._results.pop(pool_id, None)
        self.blobs.drop_pool(pool_id)

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


class EagerPublisher:
    """Runs each published message's tasks at once, as a worker would, and keeps their
    records in ``store``."""

    def __init__(self, store: MemoryStore, signer: Signer) -> None:
        self._store = store
        self._signer = signer
        self._revoked: set[str] = set()

    def publish(self, messages: Sequence[TaskMessage]) -> None:
        for message in messages:
            for wire in message.args:
                envelope = TaskEnvelope.from_wire(wire, self._signer)
                if envelope.pool_id in self._revoked:
                    continue
                record = execute.execute(envelope, functools.partial(self._read_blob,
                                                                     envelope.pool_id))
                self._store.push_results(envelope.pool_id, [
                    record.to_bytes(self._signer, envelope.pool_id)])

    def _read_blob(self, pool_id: str, ref: BlobRef) -> Payload:
        return self._store.blobs.get(pool_id, ref.digest, ref)

    def revoke(self, message_ids: Sequence[str]) -> None:
        self._revoked.update(pool_of(message_id) for message_id in message_ids)

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass
