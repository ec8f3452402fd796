"""Which of a pool's blobs are in the result store, who needs each, and when each may go.

A message *holds* the blobs its envelopes refer to from when it is staged until its results
are in (or it failed). A blob nobody holds is deleted, except a callable's or an
initializer's: the next call of the same function (every ``apply_async`` serialises it anew)
would send the same bytes again, so up to :data:`KEEP_BYTES` of them are kept, least
recently used first out. Blobs that may go are deleted at the backend's next round trip;
the pool's end deletes the rest, and if the client dies they expire with the pool.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from ..wire.payload import BlobRef

#: Bytes of released callables' blobs a pool keeps in the store for reuse.
KEEP_BYTES = 64 * 2**20


class BlobLedger:
    def __init__(self, keep_bytes: int = KEEP_BYTES) -> None:
        self._lock = threading.Lock()
        self._keep_bytes = keep_bytes
        self._holders: dict[BlobRef, set[str]] = {}
        self._held: dict[str, set[BlobRef]] = {}
        self._reusable: set[BlobRef] = set()
        self._kept: collections.OrderedDict[BlobRef, None] = collections.OrderedDict()
        self._kept_bytes = 0
        self._unused: set[BlobRef] = set()

    def hold(self, message_id: str, ref: BlobRef, reusable: bool = False) -> bool:
        """Count ``message_id`` as a holder of ``ref``; return True if the blob is not in
        the store and must be written first."""
        with self._lock:
            self._held.setdefault(message_id, set()).add(ref)
            if reusable:
                self._reusable.add(ref)
            holders = self._holders.get(ref)
            if holders is not None:
                holders.add(message_id)
                return False
            self._holders[ref] = {message_id}
            if ref in self._kept:
                del self._kept[ref]
                self._kept_bytes -= ref.size
                return False
            if ref in self._unused:  # not deleted yet: still there
                self._unused.discard(ref)
                return False
            return True

    def release(self, message_ids: list[str]) -> None:
        """The messages are done with their blobs."""
        with self._lock:
            for message_id in message_ids:
                for ref in self._held.pop(message_id, ()):
                    holders = self._holders.get(ref)
                    if holders is None:
                        continue
                    holders.discard(message_id)
                    if not holders:
                        del self._holders[ref]
                        self._unhold(ref)

    def drop_unused(self, delete: Callable[[list[BlobRef]], None]) -> None:
        """Hand the blobs that may go to ``delete``, which sends their deletion; under the
        ledger's lock, so that a blob held again afterwards is written after it is
        deleted, never before."""
        with self._lock:
            if self._unused:
                delete(list(self._unused))
                self._unused.clear()

    def _unhold(self, ref: BlobRef) -> None:
        if ref not in self._reusable or ref.size > self._keep_bytes:
            self._reusable.discard(ref)
            self._unused.add(ref)
            return
        self._kept[ref] = None
        self._kept_bytes += ref.size
        while self._kept_bytes > self._keep_bytes:
            old, _ = self._kept.popitem(last=False)
            self._kept_bytes -= old.size
            self._reusable.discard(old)
            self._unused.add(old)
