"""The in-process backend: tasks run at publish time, in the engine's dispatcher thread.

For users' unit tests: no broker, no worker processes, but the same serialisation and the
same :func:`distpool.worker.execute.execute` as a real worker, so what cannot travel fails here too.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import EnvelopeError
from ..wire.envelope import MESSAGE_DONE, Signer, TaskEnvelope
from ..wire.payload import BlobRef, Payload
from ..worker import execute
from .base import Backend


class EagerBackend(Backend):
    def __init__(self, secret: bytes | None = None) -> None:
        # Envelopes and records take the same signed round trip as on a real cluster.
        self._signer = Signer(secret if secret is not None else os.urandom(32))
        self._cond = threading.Condition()
        self._results: dict[str, collections.deque[bytes]] = collections.defaultdict(
            collections.deque)
        self._cancelled: set[str] = set()

    def worker_slots(self) -> int:
        return 0  # unknown: the pool defaults to the CPU count, as multiprocessing does

    def refresh_pool(self, pool_id: str, info: dict[str, Any]) -> bool:
        return True  # nothing here can lose it

    @property
    def signer(self) -> Signer:
        return self._signer

    def stage(self, pool_id: str, message_id: str,
              envelopes: Sequence[TaskEnvelope]) -> list[TaskEnvelope]:
        return list(envelopes)  # every payload rides inside its envelope: nothing to store

    def release(self, pool_id: str, message_ids: Sequence[str]) -> None:
        pass

    def fetch_result(self, pool_id: str, task_id: str, ref: BlobRef) -> Payload:
        raise EnvelopeError(f"result of task {task_id} refers to a blob, which the eager "
                            "backend never writes", pool_id, task_id)

    def publish(self, messages: Sequence[Sequence[TaskEnvelope]]) -> None:
        for message in messages:
            for sent in message:
                if sent.pool_id in self._cancelled:
                    continue
                envelope = TaskEnvelope.from_wire(sent.to_wire(self._signer), self._signer)
                record = execute.execute(envelope).to_bytes(self._signer, envelope.pool_id)
                with self._cond:
                    self._results[envelope.pool_id].append(record)
                    self._cond.notify_all()

    def fetch_results(self, pool_id: str, timeout: float) -> list[bytes]:
        with self._cond:
            queue = self._results[pool_id]
            if not queue:
                self._cond.wait(timeout)
            records = list(queue)
            queue.clear()
        return records

    def message_states(self, pool_id: str, message_ids: Sequence[str]) -> list[str | None]:
        return [MESSAGE_DONE] * len(message_ids)  # each ran when it was published

    def wake(self, pool_id: str) -> None:
        with self._cond:
            self._cond.notify_all()

    def cancel(self, pool_id: str, message_ids: Iterable[str]) -> None:
        self._cancelled.add(pool_id)

    def close_pool(self, pool_id: str) -> None:
        with self._cond:
            self._results.pop(pool_id, None)

    def close(self) -> None:
        pass
