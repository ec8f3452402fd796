"""Digests of a task's arguments, so that a rerun of a named run can reuse what it journaled.

A journaled result is reused for an item only if its arguments' digest equals the one
journaled. So a digest is the same for equal values in any process, whatever
``PYTHONHASHSEED``, on every supported Python, and never the same for values a function could
tell apart (a false match reuses a wrong result, a false mismatch only computes one again).

Values are encoded with a tag of their type (``1``, ``1.0``, ``True``, ``"1"``, ``(1,)`` and
``[1]`` all differ), floats by their bits. Sets and plain dicts go sorted by their items'
digests: their order is the hash seed's, or one ``==`` ignores. Subclasses of tuple, list and
dict that are all in their items (namedtuples, ``OrderedDict``) go by class name and items in
their own order; NumPy arrays (if NumPy is loaded) by dtype, shape and bytes in C order.

Anything else goes by its pickle, which is what carries it to the function (classes and
functions go by name in both). So does, as a whole, a value with a cycle, nesting deeper than
:data:`MAX_DEPTH` or a mutable object in two places (pickle keeps all three). A pickle holding
sets or dicts may differ between processes: such values are computed again, never wrongly
reused. A value pickle refuses raises TypeError: it is not reusable.
"""

from __future__ import annotations

import enum
import hashlib
import io
import pickle
import struct
import sys
import types
from collections import OrderedDict
from typing import Any, Callable

#: Changed with the encoding, so that no digest of another encoding ever matches.
_SCHEME = b"distpool.digest 1\0"
#: Containers nested deeper than this are hashed by the pickle of the whole value.
MAX_DEPTH = 100
#: Bytes gathered before the hash takes them, and the size from which it takes data directly.
_CHUNK = 1 << 16
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement
_BASES = (object, tuple, list, dict, OrderedDict)
#: What only a class written in C holds (from 3.12 many such classes are heap types too,
#: defaultdict among them, whose default factory its items do not show).
_C_MEMBERS = (types.MethodDescriptorType, types.WrapperDescriptorType,
              types.MemberDescriptorType, types.BuiltinFunctionType,
              types.ClassMethodDescriptorType)
_PLAIN_KINDS = frozenset("biufcmMSUV")  # NumPy dtypes whose values are in their bytes
#: What may be in two places: nothing can change these, or pickle sends them by name.
_SHAREABLE = frozenset({type(None), bool, int, float, complex, str, bytes, tuple, frozenset,
                        types.FunctionType, types.BuiltinFunctionType, types.ModuleType})
_q, _Q = struct.Struct("<q").pack, struct.Struct("<Q").pack
_d, _dd = struct.Struct("<d").pack, struct.Struct("<dd").pack
_TAGS: dict[type, bytes] = {tuple: b"t", list: b"l", set: b"S", frozenset: b"F", dict: b"d"}


class _Whole(Exception):
    """The value is cyclic, nested too deeply or has a mutable object in two places."""


def digest(value: object) -> bytes:
    """The canonical SHA-256 digest (32 bytes) of ``value``: see the module's description.

    Raises TypeError, naming the type, for a value (or a part of one) pickle refuses, and for
    one that fails otherwise (a released memoryview, a dict another thread changes)."""
    try:
        return _Encoder({}).digest(value, 0)
    except (_Whole, RecursionError):
        pass
    except TypeError:
        raise
    except Exception as exc:
        raise TypeError(f"cannot digest a {_name(type(value))}: {exc!r}") from exc
    whole = hashlib.sha256(_SCHEME + b"P")
    whole.update(_pickle(value, {}))
    return whole.digest()


class _Encoder:
    def __init__(self, seen: dict[int, object]) -> None:
        self.hash = hashlib.sha256(_SCHEME)
        self.buf = bytearray()
        self.seen = seen  # id -> object (kept alive) of the mutable objects met so far

    def digest(self, value: object, depth: int) -> bytes:
        self.put(value, depth)
        self.hash.update(self.buf)
        return self.hash.digest()

    def put(self, value: object, depth: int) -> None:
        _ENCODE.get(type(value), _other)(self, value, depth)

    def sub(self, value: object, depth: int) -> bytes:
        """The digest of a part (keys, values and set elements are sorted by theirs)."""
        return _Encoder(self.seen).digest(value, depth + 1)

    def enter(self, value: object, depth: int, mutable: bool = True) -> None:
        """Note a container: a mutable one met twice is in two places (or in a cycle)."""
        if depth > MAX_DEPTH or (mutable and id(value) in self.seen):
            raise _Whole
        if mutable:
            self.seen[id(value)] = value

    def blob(self, tag: bytes, data: bytes | bytearray | memoryview, size: int) -> None:
        self.buf += tag + _Q(size)
        if size < _CHUNK:
            self.buf += data
        else:  # without a copy
            self.hash.update(self.buf)
            self.buf.clear()
            self.hash.update(data)

    def text(self, tag: bytes, text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        self.blob(tag, data, len(data))

    def items(self, tag: bytes, values: Any, depth: int) -> None:
        buf, put = self.buf, self.put
        buf += tag + _Q(len(values))
        for item in values:
            put(item, depth + 1)
            if len(buf) > _CHUNK:
                self.hash.update(buf)
                buf.clear()


def _int(encoder: _Encoder, value: int, depth: int) -> None:
    try:
        encoder.buf += b"i" + _q(value)
    except struct.error:
        data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        encoder.blob(b"I", data, len(data))


def _buffer(encoder: _Encoder, value: bytearray | memoryview, depth: int) -> None:
    encoder.enter(value, depth)
    view = memoryview(value)
    tag = b"a" if type(value) is bytearray else b"r" if view.readonly else b"w"
    encoder.text(tag, view.format)
    encoder.buf += _Q(view.ndim) + b"".join(_Q(n) for n in view.shape or ())
    encoder.blob(b"", view if view.c_contiguous else view.tobytes(), view.nbytes)


def _unordered(encoder: _Encoder, value: Any, depth: int) -> None:
    """A set's elements, or a dict's pairs, sorted by their digests."""
    encoder.enter(value, depth, type(value) is not frozenset)
    if type(value) is dict:
        parts = sorted(encoder.sub(k, depth) + encoder.sub(v, depth) for k, v in value.items())
    else:
        parts = sorted(encoder.sub(item, depth) for item in value)
    encoder.buf += _TAGS[type(value)] + _Q(len(parts)) + b"".join(parts)


def _sequence(encoder: _Encoder, value: tuple[object, ...] | list[object], depth: int) -> None:
    encoder.enter(value, depth, type(value) is list)
    encoder.items(_TAGS[type(value)], value, depth)


_ENCODE: dict[type, Callable[[_Encoder, Any, int], None]] = {
    type(None): lambda encoder, value, depth: encoder.buf.extend(b"N"),
    bool: lambda encoder, value, depth: encoder.buf.extend(b"1" if value else b"0"),
    int: _int,
    float: lambda encoder, value, depth: encoder.buf.extend(b"f" + _d(value)),
    complex: lambda encoder, value, depth: encoder.buf.extend(
        b"c" + _dd(value.real, value.imag)),
    str: lambda encoder, value, depth: encoder.text(b"s", value),
    bytes: lambda encoder, value, depth: encoder.blob(b"b", value, len(value)),
    bytearray: _buffer, memoryview: _buffer, tuple: _sequence, list: _sequence,
    set: _unordered, frozenset: _unordered, dict: _unordered,
}


def _other(encoder: _Encoder, value: Any, depth: int) -> None:
    kind = type(value)
    numpy = sys.modules.get("numpy")
    if numpy is not None and kind is numpy.ndarray and _in_bytes(value.dtype) is not None:
        encoder.enter(value, depth)
        _dtype(encoder, b"A", value.dtype)
        encoder.buf += _Q(value.ndim) + b"".join(_Q(n) for n in value.shape)
        if not _in_bytes(value.dtype):
            encoder.items(b"o", value.flat, depth)  # .flat is in C order
        elif value.nbytes == 0:
            encoder.buf += _Q(0)
        else:  # a copy only if not C-contiguous already
            data = memoryview(numpy.ascontiguousarray(value).reshape(-1).view(numpy.uint8))
            encoder.blob(b"", data, data.nbytes)
    elif numpy is not None and isinstance(value, numpy.generic) and _in_bytes(value.dtype):
        _dtype(encoder, b"g", value.dtype)
        encoder.blob(b"", value.tobytes(), value.nbytes)
    elif isinstance(value, (tuple, list, dict)) and _all_in_items(kind, value):
        encoder.enter(value, depth, not isinstance(value, tuple))
        encoder.text(b"C", kind.__module__)
        encoder.text(b"", kind.__qualname__)
        if isinstance(value, dict):  # in its own order: an OrderedDict's is its own
            encoder.items(b"", [item for pair in value.items() for item in pair], depth)
        else:
            encoder.items(b"", value, depth)
    else:
        _pickled(encoder, value)


def _in_bytes(dtype: Any) -> bool | None:
    """Whether a NumPy dtype's values are in their bytes: False for objects, None for neither."""
    if dtype.kind == "O":
        return False
    return True if dtype.kind in _PLAIN_KINDS and not dtype.hasobject else None


def _dtype(encoder: _Encoder, tag: bytes, dtype: Any) -> None:
    fields = dtype.descr if dtype.fields is not None else ""
    encoder.text(tag, f"{dtype.str} {dtype.char} {fields}")


def _all_in_items(kind: type, value: object) -> bool:
    """Whether an instance of a subclass of tuple, list or dict is all in its items: it has
    no attributes, its class is named and defined in Python (or is OrderedDict), no slots."""
    if getattr(value, "__dict__", None) or "<locals>" in kind.__qualname__:
        return False
    return all(cls in _BASES or (cls.__flags__ & _HEAPTYPE and not cls.__dict__.get("__slots__")
                                 and not any(isinstance(member, _C_MEMBERS)
                                             for member in cls.__dict__.values()))
               for cls in kind.__mro__)


class _Pickler(pickle.Pickler):
    """Pickles a value, noting the objects in it that may not be in two places."""

    def __init__(self, file: io.BytesIO, found: dict[int, object]) -> None:
        super().__init__(file, protocol=5)
        self.found = found

    def persistent_id(self, obj: Any) -> None:
        if type(obj) not in _SHAREABLE and not isinstance(obj, (type, enum.Enum)):
            self.found[id(obj)] = obj  # kept alive, so that no other object takes its id


def _pickled(encoder: _Encoder, value: object) -> None:
    found: dict[int, object] = {}
    data = _pickle(value, found)
    if not found.keys().isdisjoint(encoder.seen.keys()):  # (iterates over the smaller)
        raise _Whole
    encoder.seen.update(found)
    encoder.text(b"p", type(value).__module__)
    encoder.text(b"", type(value).__qualname__)
    encoder.blob(b"", data, data.nbytes)


def _pickle(value: object, found: dict[int, object]) -> memoryview:
    """``value``'s pickle, or TypeError naming its type."""
    stream = io.BytesIO()
    try:
        _Pickler(stream, found).dump(value)
    except Exception as exc:  # pickle raises whatever a __reduce__ raises
        raise TypeError(f"cannot digest a {_name(type(value))}: {exc!r}") from exc
    return stream.getbuffer()


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"
