"""What a result record that the collector pops means for the task it names."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from typing import NamedTuple

from ..errors import AuthenticationError, EnvelopeError, VersionSkewWarning
from ..store.keys import result_blob
from ..transports.base import Blobs
from ..wire.envelope import ResultRecord
from ..wire.payload import Payload
from ..wire.signing import Signer

logger = logging.getLogger("distpool")

#: A result that came back as a blob: fetched when it is delivered.
BlobResult = Callable[[], Payload]


class Outcome(NamedTuple):
    """A task's outcome: ``error``, or what ``payload`` holds (or fetches)."""

    task_id: str
    ok: bool
    error: BaseException | None = None
    elapsed: float | None = None
    payload: Payload | BlobResult | None = None


class RecordReader:
    """Reads the result records of pool ``pool_id``: each is authenticated before anything
    in it is believed, and what workers had to say (an installed module of another version:
    :class:`~distpool.errors.VersionSkewWarning`) is told once a pool."""

    def __init__(self, pool_id: str, signer: Signer, blobs: Blobs) -> None:
        self._pool_id = pool_id
        self._signer = signer
        self._blobs = blobs
        self._warned: set[str] = set()

    def read(self, raw: bytes) -> Outcome | None:
        """The outcome ``raw`` gives its task; None if it names none. Its payload is loaded
        when it is delivered."""
        try:
            record = ResultRecord.from_bytes(raw, self._signer, self._pool_id)
        except EnvelopeError as exc:
            # Never loaded. If it names a task in flight, that task fails rather than waits.
            logger.error("pool %s: refused a result record: %s", self._pool_id, exc)
            return None if exc.task_id is None else Outcome(exc.task_id, False, exc)
        for text in record.warnings:
            if text not in self._warned:
                self._warned.add(text)
                warnings.warn(text, VersionSkewWarning, stacklevel=1)
        if record.rejected is not None:
            return Outcome(record.task_id, False, AuthenticationError(
                f"a worker refused task {record.task_id}: {record.rejected}",
                self._pool_id, record.task_id))
        return Outcome(record.task_id, record.ok, None, record.elapsed,
                       payload_of(record, self._blobs, self._pool_id))


def payload_of(record: ResultRecord, blobs: Blobs, pool_id: str) -> Payload | BlobResult:
    """The payload of a result record: carried in it, or a blob of the pool's, fetched (and
    deleted) when it is called."""
    ref = record.payload
    if isinstance(ref, Payload):
        return ref
    return functools.partial(blobs.take, pool_id, result_blob(record.task_id, ref.digest), ref)
