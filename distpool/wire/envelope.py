"""What travels between a client and a worker, and how each side knows it is genuine.

dill, like pickle, runs code while it loads, so nothing that came through the broker or the
result store is loaded before it is authenticated:

* A **task envelope** (:class:`TaskEnvelope`) is a JSON object inside an ordinary Celery
  message. It carries the Python, dill and format versions, its pool and task ids, an expiry
  time and the payloads, and an HMAC-SHA256 over all of them under the cluster's shared key.
  Binding the ids and the expiry into the signature means an envelope cannot be replayed as
  another task, into another pool, or after it expires.
* A **result record** (:class:`ResultRecord`) is a JSON header line and a payload, signed by
  the worker over the pool id, the task id, the header fields and the payload.
* It also names what the task's code needs beyond the payloads: the *bundles* of the user's
  own modules (:mod:`distpool.wire.bundles`), each a blob, and the versions of the installed
  modules it refers to (:mod:`distpool.wire.versions`), which a worker compares with its own.
* A payload (:mod:`distpool.wire.payload`) rides inside its envelope or record, base64 in the
  JSON, when small; a larger one is a *blob* in the result store, raw bytes under its SHA-256,
  and the envelope or record carries and signs a :class:`~distpool.wire.payload.BlobRef`
  (hash and size) instead. Whoever fetches a blob checks its size and hash against the
  signed reference before loading it, so the signature covers the bytes either way.
* A **rejection** is a result record a worker sends, unsigned and without payload, when it
  refuses a task (bad signature, expired): the caller then fails that task at once with
  :class:`~distpool.errors.AuthenticationError` instead of waiting. It carries no payload, so
  a forged one can fail a task but never run anything.

Signatures are made and checked by :class:`~distpool.wire.signing.Signer`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import reprlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Union

from ..errors import AuthenticationError, EnvelopeError, IncompatibleEnvelopeError
from .bundles import BundleRef, check_module_name
from .payload import BlobRef, Payload
from .serialization import DILL_VERSION, PYTHON_VERSION
from .signing import Signer

#: A payload, or where it is when it travels out of band.
Data = Union[Payload, BlobRef]
#: A bundle as the client makes it (its archive, a payload), or as it travels (a reference).
Bundle = Union["PendingBundle", BundleRef]

ENVELOPE_FORMAT = 3
#: A message's claim once its results are pushed (see :mod:`distpool.worker.claims`): what
#: the workers say of a message whose results are on their way.
MESSAGE_DONE = "done"
#: How long after it is sent a task envelope may still be run.
ENVELOPE_LIFETIME = 24 * 3600.0
#: Longest result header read: a real one is a flat object of a few short fields, and
#: anything larger is not worth parsing (or holding) on the collector thread.
MAX_HEADER = 64 * 1024
#: Longest run time a result record may claim, in seconds (about 30 years).
MAX_ELAPSED = 1e9
#: Largest blob a reference may name: beyond any memory, so a hostile size allocates nothing.
MAX_BLOB_SIZE = 2**44
#: Longest module name or version an envelope may carry, and most of either: far beyond any
#: real one, so that a hostile message costs nothing to read.
MAX_VERSION_TEXT = 200
MAX_VERSIONS = 1000
_HEX = frozenset("0123456789abcdef")

# For error messages about unauthenticated values: bounded in depth and length.
_describe = reprlib.Repr()
_describe.maxstring = _describe.maxother = 80


class PendingBundle(NamedTuple):
    """A bundle as the client holds it: the top-level module it provides, and its archive,
    which staging stores as a blob of the pool before the envelope travels."""

    name: str
    archive: Payload

    @property
    def ref(self) -> BundleRef:
        return BundleRef(self.name, self.archive.digest, self.archive.nbytes)


@dataclass(frozen=True)
class TaskEnvelope:
    """One task: ids, what to run, and on what.

    ``kind`` says how ``function`` meets ``arguments``: ``apply`` calls it once with
    ``(args, kwds)``; ``map`` and ``starmap`` call it for each item of a chunk. ``bundles``:
    the user's own modules the payloads need, which go first on the worker's import path;
    ``versions``: ``(module, version)`` of the installed ones they rely on, which the worker
    compares with its own (``strict_versions``: refusing the task if any differs).
    """

    pool_id: str
    task_id: str
    kind: str
    function: Data
    arguments: Data
    initializer: Data | None = None
    max_tasks: int | None = None
    bundles: tuple[Bundle, ...] = ()
    versions: tuple[tuple[str, str], ...] = ()
    strict_versions: bool = False
    #: What ``function`` is called (``module.qualname``), for operators: the message's name
    #: in Celery's logs, ``inspect`` and Flower. Not part of the envelope on the wire.
    label: str | None = None

    KINDS = ("apply", "map", "starmap")

    def bundle_refs(self) -> list[BundleRef]:
        """The bundles as they travel: references to their blobs."""
        return [bundle if isinstance(bundle, BundleRef) else bundle.ref
                for bundle in self.bundles]

    def to_wire(self, signer: Signer, now: float | None = None) -> dict[str, Any]:
        """The JSON object for a Celery message, signed, valid for ENVELOPE_LIFETIME."""
        expires = round((time.time() if now is None else now) + ENVELOPE_LIFETIME, 3)
        wire = {
            "distpool": ENVELOPE_FORMAT,
            "python": PYTHON_VERSION,
            "dill": DILL_VERSION,
            "pool": self.pool_id,
            "task": self.task_id,
            "kind": self.kind,
            "expires": expires,
            "function": _encode(self.function),
            "arguments": _encode(self.arguments),
            "initializer": None if self.initializer is None else _encode(self.initializer),
            "max_tasks": self.max_tasks,
            "bundles": [list(ref) for ref in self.bundle_refs()],
            "versions": [list(pair) for pair in self.versions],
            "strict_versions": self.strict_versions,
        }
        wire["signature"] = signer.sign(*self._signed_fields(expires))
        return wire

    def _signed_fields(self, expires: float) -> tuple[bytes | memoryview, ...]:
        return (str(ENVELOPE_FORMAT).encode(), PYTHON_VERSION.encode(), DILL_VERSION.encode(),
                self.pool_id.encode(), self.task_id.encode(), self.kind.encode(),
                repr(expires).encode(), _signed(self.function), _signed(self.arguments),
                b"-" if self.initializer is None else _signed(self.initializer),
                repr(self.max_tasks).encode(),
                _canonical(tuple(self.bundle_refs())),
                _canonical(self.versions),
                b"1" if self.strict_versions else b"0")

    @classmethod
    def from_wire(cls, message: Any, signer: Signer, now: float | None = None) -> TaskEnvelope:
        """Validate and authenticate a message; raise :class:`EnvelopeError` (or one of its
        subclasses) rather than return anything that was not sent by a key holder."""
        if not isinstance(message, Mapping) or "distpool" not in message:
            raise EnvelopeError("not a distpool task envelope")
        pool_id, task_id = message.get("pool"), message.get("task")
        if (not isinstance(pool_id, str) or not isinstance(task_id, str)
                or not _signable(pool_id, task_id)):
            raise EnvelopeError("task envelope without pool and task ids")
        mismatch = _version_mismatch(message)
        if mismatch:
            raise IncompatibleEnvelopeError(mismatch, pool_id, task_id)
        kind, max_tasks, expires = (message.get("kind"), message.get("max_tasks"),
                                    message.get("expires"))
        if kind not in cls.KINDS:
            raise EnvelopeError(f"unknown task kind {_describe.repr(kind)}", pool_id, task_id)
        if max_tasks is not None and (
                type(max_tasks) is not int or max_tasks < 1):
            raise EnvelopeError(f"invalid max_tasks {_describe.repr(max_tasks)}", pool_id,
                                task_id)
        if not isinstance(expires, (int, float)) or isinstance(expires, bool):
            raise EnvelopeError("task envelope without an expiry time", pool_id, task_id)
        initializer = message.get("initializer")
        strict = message.get("strict_versions")
        if not isinstance(strict, bool):
            raise EnvelopeError("task envelope without a strict_versions flag", pool_id,
                                task_id)
        envelope = cls(
            pool_id=pool_id,
            task_id=task_id,
            kind=kind,
            function=_decode(message.get("function"), pool_id, task_id),
            arguments=_decode(message.get("arguments"), pool_id, task_id),
            initializer=None if initializer is None else _decode(initializer, pool_id, task_id),
            max_tasks=max_tasks,
            bundles=_bundles(message.get("bundles"), pool_id, task_id),
            versions=_versions(message.get("versions"), pool_id, task_id),
            strict_versions=strict,
        )
        try:
            signer.check(message.get("signature"), *envelope._signed_fields(expires))
        except AuthenticationError as exc:
            raise AuthenticationError(str(exc), pool_id, task_id) from None
        if expires < (time.time() if now is None else now):
            raise AuthenticationError("the task envelope has expired", pool_id, task_id)
        return envelope


class ResultRecord(NamedTuple):
    """A task's outcome as a worker pushes it to the pool's result list.

    ``elapsed`` is how long the user's code ran, in seconds, when it ran at all.
    ``rejected`` is set, and the payload empty, when the worker refused the task.
    ``warnings``: what the worker has to tell the client's user (an installed module at
    another version than the client's, see :mod:`distpool.wire.versions`).
    """

    task_id: str
    ok: bool
    payload: Data
    elapsed: float | None = None
    rejected: str | None = None
    warnings: tuple[str, ...] = ()

    def to_bytes(self, signer: Signer, pool_id: str) -> bytes:
        header: dict[str, Any] = {"task": self.task_id, "ok": self.ok}
        if self.rejected is not None:
            header["rejected"] = self.rejected
            return _header_line(header)
        # Rounded before signing: the reader signs what it parsed from the header.
        elapsed = None if self.elapsed is None else round(self.elapsed, 6)
        if elapsed is not None:
            header["elapsed"] = elapsed
        if self.warnings:
            header["warnings"] = list(self.warnings)
        if isinstance(self.payload, BlobRef):
            header["blob"], header["size"] = self.payload
        header["signature"] = signer.sign(*self._signed_fields(pool_id, elapsed))
        if isinstance(self.payload, BlobRef):
            return _header_line(header)
        return b"".join((_header_line(header), *self.payload.frames))

    def _signed_fields(self, pool_id: str,
                       elapsed: float | None) -> tuple[bytes | memoryview, ...]:
        return (pool_id.encode(), self.task_id.encode(), b"1" if self.ok else b"0",
                repr(elapsed).encode(), _canonical(self.warnings), _signed(self.payload))

    @classmethod
    def rejection(cls, task_id: str, reason: str) -> ResultRecord:
        return cls(task_id, False, _EMPTY, rejected=reason)

    @classmethod
    def from_bytes(cls, raw: bytes, signer: Signer, pool_id: str) -> ResultRecord:
        """Parse and authenticate a record of pool ``pool_id``; raise :class:`EnvelopeError`
        (naming the task when the header does) rather than return an unauthenticated one.
        Whatever ``raw`` holds, nothing else is raised: anyone who can reach the result
        store can push onto the list this reads."""
        end = raw.find(b"\n", 0, MAX_HEADER)
        header = None
        if end >= 0:
            try:
                header = json.loads(raw[:end].decode())  # strict UTF-8
            except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep
                pass
        if (
            not isinstance(header, dict)
            or not isinstance(header.get("task"), str)
            or not _signable(header["task"])
            or not isinstance(header.get("ok"), bool)
        ):
            raise EnvelopeError("not a distpool result record")
        task_id = header["task"]
        body = raw[end + 1:]
        rejected = header.get("rejected")
        if rejected is not None:
            if not isinstance(rejected, str) or not _signable(rejected) or body:
                raise EnvelopeError("malformed rejection record", pool_id, task_id)
            return cls(task_id, False, _EMPTY, rejected=rejected)
        payload: Data = Payload.of_bytes(body)
        if "blob" in header:
            if body:
                raise EnvelopeError("result record with a blob and a payload", pool_id,
                                    task_id)
            payload = _blob_ref({"blob": header["blob"], "size": header.get("size")},
                                pool_id, task_id)
        elapsed = header.get("elapsed")
        # Also refuses NaN and infinity, which would poison the engine's run-time means.
        if elapsed is not None and (type(elapsed) not in (int, float)
                                    or not 0 <= elapsed < MAX_ELAPSED):
            raise EnvelopeError("result record with an invalid run time", pool_id, task_id)
        warnings = header.get("warnings", [])
        if not (isinstance(warnings, list) and len(warnings) <= MAX_VERSIONS
                and all(isinstance(w, str) and _signable(w) for w in warnings)):
            raise EnvelopeError("result record with malformed warnings", pool_id, task_id)
        record = cls(task_id, header["ok"], payload, elapsed, warnings=tuple(warnings))
        try:
            signer.check(header.get("signature"), *record._signed_fields(pool_id, elapsed))
        except AuthenticationError as exc:
            raise AuthenticationError(f"result of task {task_id}: {exc}", pool_id,
                                      task_id) from None
        return record


def _signable(*texts: str) -> bool:
    """Whether the strings encode to UTF-8, as signing needs: JSON may carry lone
    surrogates ("\\ud800"), which do not."""
    try:
        for text in texts:
            text.encode()
    except UnicodeEncodeError:
        return False
    return True


@functools.lru_cache(maxsize=256)
def _canonical(value: tuple[Any, ...]) -> bytes:
    """The one JSON text of ``value`` (tuples of strings, numbers and tuples of those), for
    a signature to cover. Remembered: the tasks of one call carry the same ones."""
    return json.dumps(value, separators=(",", ":")).encode() if value else b"[]"


def _bundles(value: Any, pool_id: str, task_id: str) -> tuple[BundleRef, ...]:
    if not isinstance(value, list) or len(value) > MAX_VERSIONS:
        raise EnvelopeError("task envelope without a list of bundles", pool_id, task_id)
    bundles = []
    for item in value:
        if not isinstance(item, list) or len(item) != 3:
            raise EnvelopeError(f"malformed bundle {_describe.repr(item)}", pool_id, task_id)
        name, digest, size = item
        if not isinstance(name, str) or not check_module_name(name):
            raise EnvelopeError(f"a bundle names {_describe.repr(name)}, not a module",
                                pool_id, task_id)
        ref = _blob_ref({"blob": digest, "size": size}, pool_id, task_id)
        bundles.append(BundleRef(name, ref.digest, ref.size))
    return tuple(bundles)


def _versions(value: Any, pool_id: str, task_id: str) -> tuple[tuple[str, str], ...]:
    if (not isinstance(value, list) or len(value) > MAX_VERSIONS or not all(
            isinstance(pair, list) and len(pair) == 2
            and all(isinstance(text, str) and 0 < len(text) <= MAX_VERSION_TEXT
                    and _signable(text) for text in pair)
            for pair in value)):
        raise EnvelopeError("task envelope with malformed module versions", pool_id, task_id)
    return tuple((module, version) for module, version in value)


def _header_line(header: dict[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode() + b"\n"


def _version_mismatch(message: Mapping[str, Any]) -> str | None:
    theirs = (message.get("distpool"), message.get("python"), message.get("dill"))
    ours = (ENVELOPE_FORMAT, PYTHON_VERSION, DILL_VERSION)
    if theirs == ours:
        return None
    return (
        "task sent by envelope format {}, Python {}, dill {} cannot run on this worker "
        "(envelope format {}, Python {}, dill {}): run the client and the workers on the "
        "same Python minor version and the same dill version".format(
            *(v[:80] if isinstance(v, str) else _describe.repr(v) for v in theirs), *ours)
    )


_EMPTY = Payload.of_bytes(b"")


def _signed(data: Data) -> bytes | memoryview:
    """What a signature covers of a payload: its bytes, or the hash and size of its blob
    (after a "#", which no payload starts with: they start with their encoding's tag)."""
    if isinstance(data, BlobRef):
        return f"#{data.digest} {data.size}".encode()
    return data.contiguous()


def _encode(data: Data) -> Any:
    if isinstance(data, BlobRef):
        return {"blob": data.digest, "size": data.size}
    return base64.b64encode(data.to_bytes()).decode("ascii")


def _decode(value: Any, pool_id: str, task_id: str) -> Data:
    if not isinstance(value, str):
        if isinstance(value, Mapping):
            return _blob_ref(value, pool_id, task_id)
        raise EnvelopeError("envelope payload is neither text nor a blob", pool_id, task_id)
    try:
        return Payload.of_bytes(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(f"envelope payload is not base64: {exc}", pool_id,
                            task_id) from None


def _blob_ref(value: Mapping[str, Any], pool_id: str, task_id: str) -> BlobRef:
    digest, size = value.get("blob"), value.get("size")
    if (set(value) != {"blob", "size"} or not isinstance(digest, str) or len(digest) != 64
            or not _HEX.issuperset(digest) or type(size) is not int
            or not 0 < size <= MAX_BLOB_SIZE):
        raise EnvelopeError(f"malformed blob reference {_describe.repr(dict(value))}",
                            pool_id, task_id)
    return BlobRef(digest, size)
