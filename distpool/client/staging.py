"""Staging: putting what a message carries where its workers will find it, and taking it
away once nobody needs it.

A payload small enough rides inside its envelope; a larger one becomes a *blob* of the pool
in the result store, and the envelope carries its reference instead (:class:`Stager`). A
bundle of the user's modules is always a blob, stored once per pool and kept for the pool's
life, for workers that join late.

A message *holds* the blobs its envelopes refer to from when it is staged until its results
are in (or it failed) (:class:`BlobLedger`). A blob nobody holds is deleted, except a
callable's or an initializer's: the next call of the same function (every ``apply_async``
serialises it anew) would send the same bytes again, so up to :data:`KEEP_BYTES` of them are
kept, least recently used first out. Blobs that may go are deleted at the store's next round
trip; the pool's end deletes the rest, and if the client dies they expire with the pool.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable, Sequence

from ..transports.base import Blobs
from ..wire.bundles import BundleRef
from ..wire.envelope import Bundle, Data, TaskEnvelope
from ..wire.payload import INLINE_CALLABLE_LIMIT, INLINE_LIMIT, BlobRef, Payload

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


class Stager:
    """Stages the messages of pool ``pool_id`` into ``blobs``, whose blobs live ``ttl``
    seconds unless the pool's refreshes keep them."""

    def __init__(self, blobs: Blobs, pool_id: str, ttl: float) -> None:
        self._blobs = blobs
        self._pool_id = pool_id
        self._ttl = ttl
        self._ledger = BlobLedger()
        self._bundles: set[str] = set()  # the hashes of those stored

    def stage(self, message_id: str, envelopes: Sequence[TaskEnvelope]) -> list[TaskEnvelope]:
        """The envelopes of message ``message_id`` as they travel, their large payloads
        stored as blobs. Raises, for this message alone, if its data cannot be stored
        (:class:`~distpool.errors.PayloadTooLargeError`: too large for the store)."""
        self.drop_unused()
        return [self._staged(message_id, envelope) for envelope in envelopes]

    def release(self, message_ids: Sequence[str]) -> None:
        """The messages are finished (their results are in, or they failed): what they
        hold may go, at the next :meth:`drop_unused`. Quick, and never raises."""
        self._ledger.release(list(message_ids))

    def drop_unused(self) -> None:
        """Send the deletion of the blobs nobody holds, without waiting for its reply."""
        self._ledger.drop_unused(lambda refs: self._blobs.delete(
            self._pool_id, [(ref.digest, ref.size) for ref in refs], wait=False))

    def _staged(self, message_id: str, envelope: TaskEnvelope) -> TaskEnvelope:
        task = envelope.task_id
        function = self._place(message_id, envelope.function, True,
                               f"the function of task {task}")
        arguments = self._place(message_id, envelope.arguments, False,
                                f"the arguments of task {task}")
        initializer = None if envelope.initializer is None else self._place(
            message_id, envelope.initializer, True, f"the initializer of task {task}")
        for bundle in envelope.bundles:
            self._store_bundle(bundle)
        if (function is envelope.function and arguments is envelope.arguments
                and initializer is envelope.initializer):
            return envelope  # all inline: the common case of small tasks, as cheap as can be
        return dataclasses.replace(envelope, function=function, arguments=arguments,
                                   initializer=initializer)

    def _place(self, message_id: str, data: Data, code: bool, what: str) -> Data:
        """``data`` (``what`` it is) as an envelope carries it: inline if small, else a
        reference to its blob, written unless the store has it already. ``code`` (a
        callable, or the initializer) is kept for reuse once released, and inline only when
        tiny."""
        limit = INLINE_CALLABLE_LIMIT if code else INLINE_LIMIT
        if not isinstance(data, Payload) or data.nbytes <= limit:
            return data
        ref = data.ref()
        if self._ledger.hold(message_id, ref, reusable=code):
            self._blobs.put(self._pool_id, ref.digest, data, what, self._ttl)
        return ref

    def _store_bundle(self, bundle: Bundle) -> None:
        """Store ``bundle`` as a blob of the pool, the first time."""
        if isinstance(bundle, BundleRef) or bundle.archive.digest in self._bundles:
            return
        self._blobs.put(self._pool_id, bundle.archive.digest, bundle.archive,
                        f"the bundle of {bundle.name}", self._ttl)
        self._bundles.add(bundle.archive.digest)
