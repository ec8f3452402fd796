"""A serialised value as it travels: a pickle stream and the buffers it refers to.

Pickle protocol 5 lets large binary objects (NumPy arrays, ``bytearray``, anything that
exports a ``PickleBuffer``) travel *out of band*: the pickle stream only says where they go,
and their memory is written as it is, without being copied into the stream. A
:class:`Payload` keeps those pieces apart (its *frames*), so that sending one copies
nothing in this process. Its bytes, laid end to end, are the serialiser's tag (one byte,
upper case) and the pickle stream; or, when buffers follow it, the tag in lower case and::

    buffer count n (4 bytes) | stream length (8) | n buffer lengths (8 each)
    | pickle stream | for each buffer: zeros to the next multiple of 64 | buffer

(buffers start 64-aligned, as NumPy prefers). A payload of up to :data:`INLINE_LIMIT` bytes
rides inside its task envelope or result record; a larger one travels as a *blob*, raw bytes
in the result store under its SHA-256, and the signed envelope carries a :class:`BlobRef`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from typing import Callable, NamedTuple, Union

from ..errors import EnvelopeError

#: Payloads of up to this many bytes travel inside the Celery message or result record
#: (base64 there: JSON carries text); larger ones as raw bytes, out of band. Below about
#: this size a separate round trip to the store costs more than encoding the bytes.
INLINE_LIMIT = 16 * 1024
#: A result of up to this many bytes rides inside its record, raw (a record is bytes, not
#: JSON, and is stored once): one push where a blob takes a write, a read and a deletion.
#: The collector takes up to a few hundred records at a time: larger ones go as blobs.
RESULT_INLINE_LIMIT = 256 * 1024
#: Callables (with the globals they carry) travel inline only up to this: a batch of short
#: tasks repeats an inline callable in every envelope, while a blob is fetched once per
#: worker process and cached there.
INLINE_CALLABLE_LIMIT = 1024
#: Buffers of fewer bytes stay inside the pickle stream: not worth a frame of their own.
MIN_OUT_OF_BAND = 1024

_TABLE = struct.Struct("<cIQ")
_LENGTH = struct.Struct("<Q")
_ALIGN = 64
_PADDING = bytes(_ALIGN)
_NO_BUFFERS: list[memoryview] = []  # never changed: only read by the unpickler

Frame = Union[bytes, bytearray, memoryview]


class BlobRef(NamedTuple):
    """Where a payload that travels out of band is: its SHA-256 (hex) and its size."""

    digest: str
    size: int


#: Reads the blob a reference names, checked against it (see :mod:`distpool.store.blobs`).
ReadBlob = Callable[[BlobRef], "Payload"]


class Payload:
    """A serialised value: its bytes, as one frame or several laid end to end."""

    __slots__ = ("frames", "nbytes", "_digest")

    def __init__(self, frames: Sequence[Frame]) -> None:
        self.frames: list[bytes | memoryview] = [
            frame if isinstance(frame, bytes) else _bytes_view(frame) for frame in frames]
        self.nbytes = sum(len(frame) if isinstance(frame, bytes) else frame.nbytes
                          for frame in self.frames)
        self._digest: str | None = None

    @classmethod
    def of_bytes(cls, data: bytes) -> Payload:
        """The payload whose bytes are ``data`` (the common case, made without checks: this
        is on every small task's path)."""
        payload = cls.__new__(cls)
        payload.frames, payload.nbytes, payload._digest = [data], len(data), None
        return payload

    @classmethod
    def pack(cls, tag: bytes, stream: Frame, buffers: Sequence[memoryview]) -> Payload:
        """The payload of a pickle ``stream`` (``tag`` says which unpickler reads it) whose
        out-of-band ``buffers`` follow it."""
        if not buffers:  # most payloads: one frame, which travels without another copy
            return cls.of_bytes(tag + stream)
        lengths = [memoryview(stream).nbytes, *(buffer.nbytes for buffer in buffers)]
        head = _TABLE.pack(tag.lower(), len(buffers), lengths[0]) + b"".join(
            _LENGTH.pack(length) for length in lengths[1:])
        frames: list[Frame] = [head, stream]
        offset = len(head) + lengths[0]
        for buffer in buffers:
            padding = -offset % _ALIGN
            if padding:
                frames.append(_PADDING[:padding])
            frames.append(buffer)
            offset += padding + buffer.nbytes
        return cls(frames)

    def unpack(self) -> tuple[bytes, memoryview, list[memoryview]]:
        """``(tag, stream, buffers)``. Buffers are writable views where the payload's memory
        is (a blob read into a ``bytearray``), else writable copies: a task may change the
        arrays it is given, as it can under multiprocessing."""
        first = self.frames[0]
        if len(self.frames) == 1 and isinstance(first, bytes) and first[:1].isupper():
            return first[:1], memoryview(first)[1:], _NO_BUFFERS  # most payloads
        data = memoryview(first if len(self.frames) == 1 else bytearray().join(self.frames))
        tag = bytes(data[:1])
        if not tag.islower():
            return tag, data[1:], _NO_BUFFERS
        try:
            _, count, stream_length = _TABLE.unpack_from(data)
            offset = _TABLE.size + count * _LENGTH.size
            if offset > data.nbytes:
                raise ValueError("buffer table runs past the end")
            lengths = [length for (length,) in _LENGTH.iter_unpack(data[_TABLE.size:offset])]
        except (struct.error, ValueError) as exc:
            raise EnvelopeError(f"malformed payload of {self.nbytes} bytes: {exc}") from None
        stream = data[offset:offset + stream_length]
        offset += stream_length
        buffers = []
        for length in lengths:
            offset += -offset % _ALIGN
            buffer = data[offset:offset + length]
            buffers.append(buffer if not buffer.readonly else memoryview(bytearray(buffer)))
            offset += length
        if offset != data.nbytes or stream.nbytes != stream_length:
            raise EnvelopeError(f"malformed payload: {data.nbytes} bytes where its table "
                                f"says {offset}")
        return tag.upper(), stream, buffers

    @property
    def size(self) -> int:
        """Its bytes, as a :class:`BlobRef` gives them."""
        return self.nbytes

    def contiguous(self) -> bytes | memoryview:
        """The payload's bytes in one buffer: its only frame, else a joined copy."""
        return self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)

    def to_bytes(self) -> bytes:
        first = self.frames[0]
        if len(self.frames) == 1 and isinstance(first, bytes):
            return first  # as made or received: no copy
        return b"".join(self.frames)

    @property
    def digest(self) -> str:
        """SHA-256 of the payload's bytes, in hex (computed once), as its blob is named."""
        if self._digest is None:
            sha = hashlib.sha256()
            for frame in self.frames:
                sha.update(frame)
            self._digest = sha.hexdigest()
        return self._digest

    def ref(self) -> BlobRef:
        return BlobRef(self.digest, self.nbytes)

    def parts(self, size: int) -> Iterator[Frame]:
        """The payload's bytes in consecutive pieces of ``size`` bytes (the last shorter),
        copying only where a piece spans frames."""
        pieces: list[memoryview] = []
        filled = 0
        for whole in self.frames:
            frame = memoryview(whole)
            start = 0
            while start < frame.nbytes:
                piece = frame[start:start + size - filled]
                pieces.append(piece)
                filled += piece.nbytes
                start += piece.nbytes
                if filled == size:
                    yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                    pieces, filled = [], 0
        if pieces:
            yield pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def __eq__(self, other: object) -> bool:
        """Payloads are equal when their bytes are."""
        if not isinstance(other, Payload):
            return NotImplemented
        return self.nbytes == other.nbytes and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"<Payload {describe_size(self.nbytes)} in {len(self.frames)} frame(s)>"


def _bytes_view(frame: Frame) -> memoryview:
    view = memoryview(frame)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def describe_size(nbytes: int) -> str:
    """``nbytes`` for people: exact, and in the unit that reads best."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes:,} bytes ({nbytes / scale:.1f} {unit})"
    return f"{nbytes:,} bytes"
