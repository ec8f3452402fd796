"""How callables, arguments and results cross between a client and a worker.

Two layers:

* **Payloads** (:func:`dumps`, :func:`loads`): C pickle when it suffices, dill when it does
  not. Anything that belongs to the client's ``__main__`` (functions, lambdas, classes) must
  travel *by value*, because a worker cannot import the client's script. dill pickles such
  functions with their globals *by reference* to ``__main__``; on the worker that reference
  resolves to the pool's own namespace module, and the globals they use are shipped beside
  them and merged into that namespace. So an initializer's ``global`` assignments are seen by
  the tasks that follow it, exactly as in a ``multiprocessing`` worker process.
* **Envelopes** (:class:`TaskEnvelope`, :class:`ResultRecord`): Celery's messages stay JSON;
  payload bytes travel inside an envelope stamped with the Python, dill and format versions,
  which are checked before anything is unpickled.

This is the only module that imports dill.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import pickle
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import dill

from .errors import EnvelopeError, IncompatibleEnvelopeError

PROTOCOL = pickle.HIGHEST_PROTOCOL
ENVELOPE_FORMAT = 1
PYTHON_VERSION = "{}.{}".format(*sys.version_info[:2])
DILL_VERSION: str = dill.__version__

_C_PICKLE = b"P"
_DILL = b"D"
_MAIN = "__main__"


# -- payloads ---------------------------------------------------------------------------

def dumps(obj: Any, *, namespace: types.ModuleType | None = None) -> bytes:
    """Serialise ``obj`` for the other side.

    On the client (``namespace`` None), anything of ``__main__`` goes by value through dill.
    On a worker, ``namespace`` is the pool's namespace module: its classes go *by name*, so
    the client rebuilds instances of its own ``__main__`` classes, as multiprocessing does.
    Raises whatever the picklers raise when neither can serialise ``obj``.
    """
    if namespace is None:
        try:
            data = pickle.dumps(obj, PROTOCOL)
        except Exception:
            pass
        else:
            # C pickle refers to __main__ objects by name; only the client can resolve those.
            if _MAIN.encode() not in data:
                return _C_PICKLE + data
        return _DILL + _dill_dumps(obj, sys.modules[_MAIN])
    buffer = io.BytesIO()
    try:
        _ByNamePickler(buffer, PROTOCOL).dump(obj)
    except Exception:
        return _DILL + _dill_dumps(obj, namespace)
    return _C_PICKLE + buffer.getvalue()


def loads(data: bytes, *, namespace: types.ModuleType | None = None) -> Any:
    """Rebuild an object made by :func:`dumps`.

    With a ``namespace`` (on a worker), ``__main__`` resolves to it and the globals shipped
    with by-value functions are added to it, without overwriting what is already there:
    like a multiprocessing worker's module state, the namespace keeps what its initializer
    and earlier tasks set.
    """
    tag, body = data[:1], memoryview(data)[1:]
    if tag == _C_PICKLE:
        return pickle.loads(body)
    if tag == _DILL:
        unpickler = _NamespaceUnpickler(io.BytesIO(body), namespace or sys.modules[_MAIN])
        obj = unpickler.load()
        while True:
            shipped_globals = unpickler.load()
            if shipped_globals is None:
                return obj
            if namespace is not None:
                for name, value in shipped_globals.items():
                    namespace.__dict__.setdefault(name, value)
    raise EnvelopeError(f"unknown payload encoding {bytes(tag)!r}")


def new_namespace() -> types.ModuleType:
    """A fresh module standing in for the client's ``__main__`` in one worker process."""
    # Named __main__ so that classes and functions defined at run time in it report the
    # same __module__ as on the client, and travel back by name.
    return types.ModuleType(_MAIN)


def _dill_dumps(obj: Any, main: types.ModuleType) -> bytes:
    buffer = io.BytesIO()
    pickler = _GlobalsCapturingPickler(buffer, main)
    pickler.dump(obj)
    shipped: set[str] = set()
    # Pickling a batch of globals may meet further __main__ functions and classes with
    # globals of their own: repeat until nothing new is referenced.
    while True:
        batch = pickler.take_referenced_globals(shipped)
        if not batch:
            break
        pickler.dump(batch)
    pickler.dump(None)
    return buffer.getvalue()


class _GlobalsCapturingPickler(dill.Pickler):  # type: ignore[misc]
    """dill's pickler, recording every function and class of ``main`` it pickles by value."""

    def __init__(self, file: io.BytesIO, main: types.ModuleType) -> None:
        super().__init__(file, PROTOCOL, byref=False, recurse=False)
        # dill writes functions' globals as a reference to ``self._main``'s namespace.
        self._main = main
        self._main_globals = main.__dict__
        self._recorded: set[int] = set()
        self._pending: list[Any] = []

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if (
            isinstance(obj, (types.FunctionType, type))
            and id(obj) not in self._recorded
            and _belongs_to(obj, self._main_globals)
        ):
            self._recorded.add(id(obj))
            self._pending.append(obj)
        super().save(obj, save_persistent_id)

    def take_referenced_globals(self, shipped: set[str]) -> dict[str, Any]:
        """The globals of ``main`` that the objects recorded so far use, less ``shipped``."""
        names: set[str] = set()
        for obj in self._pending:
            names |= _referenced_names(obj)
            # The object itself, under its own name, so the namespace has the one copy.
            name = obj.__name__
            if self._main_globals.get(name) is obj:
                names.add(name)
        self._pending.clear()
        batch = {
            name: self._main_globals[name]
            for name in names - shipped
            if name in self._main_globals and not name.startswith("__")
        }
        shipped.update(batch)
        return batch


class _NamespaceUnpickler(dill.Unpickler):  # type: ignore[misc]
    """dill's unpickler, resolving ``__main__`` to the given namespace module."""

    def __init__(self, file: io.BytesIO, main: types.ModuleType) -> None:
        super().__init__(file)
        self._main = main

    def find_class(self, module: str, name: str) -> Any:
        if module == _MAIN:
            return functools.reduce(getattr, name.split("."), self._main)
        return super().find_class(module, name)


class _ByNamePickler(pickle.Pickler):
    """C pickle that refers to a pool namespace's classes by name (see :func:`dumps`)."""

    def reducer_override(self, obj: Any) -> Any:
        if (
            isinstance(obj, type)
            and obj.__module__ == _MAIN
            and "<locals>" not in obj.__qualname__
        ):
            return _main_attribute, (obj.__qualname__,)
        return NotImplemented


def _main_attribute(qualname: str) -> Any:
    """Look ``qualname`` up in this process's ``__main__`` (on the client, the user's script)."""
    return functools.reduce(getattr, qualname.split("."), sys.modules[_MAIN])


def _belongs_to(obj: Any, main_globals: dict[str, Any]) -> bool:
    if isinstance(obj, types.FunctionType):
        return obj.__globals__ is main_globals
    return getattr(obj, "__module__", None) == _MAIN


def _referenced_names(obj: Any) -> set[str]:
    """Global names a function's code, or a class's methods, may read."""
    if isinstance(obj, types.FunctionType):
        return _code_names(obj.__code__)
    names: set[str] = set()
    for member in vars(obj).values():
        for function in _functions_in(member):
            names |= _code_names(function.__code__)
    return names


def _functions_in(member: Any) -> list[types.FunctionType]:
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    if isinstance(member, property):
        return [f for f in (member.fget, member.fset, member.fdel)
                if isinstance(f, types.FunctionType)]
    return [member] if isinstance(member, types.FunctionType) else []


def _code_names(code: types.CodeType) -> set[str]:
    # co_names also holds attribute names: shipping a few extra globals is harmless.
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


# -- envelopes --------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskEnvelope:
    """One task as it travels in a Celery message: ids, what to run, and on what.

    ``kind`` says how ``function`` meets ``arguments``: ``apply`` calls it once with
    ``(args, kwds)``; ``map`` and ``starmap`` call it for each item of a chunk.
    """

    pool_id: str
    task_id: str
    kind: str
    function: bytes
    arguments: bytes
    initializer: bytes | None = None
    max_tasks: int | None = None

    KINDS = ("apply", "map", "starmap")

    def to_wire(self) -> dict[str, Any]:
        return {
            "distpool": ENVELOPE_FORMAT,
            "python": PYTHON_VERSION,
            "dill": DILL_VERSION,
            "pool": self.pool_id,
            "task": self.task_id,
            "kind": self.kind,
            "function": _b64(self.function),
            "arguments": _b64(self.arguments),
            "initializer": None if self.initializer is None else _b64(self.initializer),
            "max_tasks": self.max_tasks,
        }

    @classmethod
    def from_wire(cls, message: Any) -> TaskEnvelope:
        """Validate a message; raise :class:`EnvelopeError` rather than misbehave."""
        if not isinstance(message, Mapping) or "distpool" not in message:
            raise EnvelopeError("not a distpool task envelope")
        pool_id, task_id = message.get("pool"), message.get("task")
        if not isinstance(pool_id, str) or not isinstance(task_id, str):
            raise EnvelopeError("task envelope without pool and task ids")
        mismatch = _version_mismatch(message)
        if mismatch:
            raise IncompatibleEnvelopeError(mismatch, pool_id, task_id)
        kind, max_tasks = message.get("kind"), message.get("max_tasks")
        if kind not in cls.KINDS:
            raise IncompatibleEnvelopeError(f"unknown task kind {kind!r}", pool_id, task_id)
        if max_tasks is not None and (not isinstance(max_tasks, int) or max_tasks < 1):
            raise EnvelopeError(f"invalid max_tasks {max_tasks!r}")
        initializer = message.get("initializer")
        return cls(
            pool_id=pool_id,
            task_id=task_id,
            kind=kind,
            function=_unb64(message.get("function")),
            arguments=_unb64(message.get("arguments")),
            initializer=None if initializer is None else _unb64(initializer),
            max_tasks=max_tasks,
        )


class ResultRecord(NamedTuple):
    """A task's outcome as a worker pushes it to the pool's result list.

    ``elapsed`` is how long the user's code ran, in seconds, when it ran at all.
    """

    task_id: str
    ok: bool
    payload: bytes
    elapsed: float | None = None

    def to_bytes(self) -> bytes:
        header: dict[str, Any] = {"task": self.task_id, "ok": self.ok}
        if self.elapsed is not None:
            header["elapsed"] = round(self.elapsed, 6)
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + self.payload

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResultRecord:
        head, sep, payload = raw.partition(b"\n")
        try:
            header = json.loads(head) if sep else None
        except ValueError:
            header = None
        if (
            not isinstance(header, dict)
            or not isinstance(header.get("task"), str)
            or not isinstance(header.get("ok"), bool)
        ):
            raise EnvelopeError("not a distpool result record")
        elapsed = header.get("elapsed")
        if elapsed is not None and (not isinstance(elapsed, (int, float)) or elapsed < 0):
            raise EnvelopeError("result record with an invalid run time")
        return cls(header["task"], header["ok"], payload, elapsed)


def _version_mismatch(message: Mapping[str, Any]) -> str | None:
    theirs = (message.get("distpool"), message.get("python"), message.get("dill"))
    ours = (ENVELOPE_FORMAT, PYTHON_VERSION, DILL_VERSION)
    if theirs == ours:
        return None
    return (
        "task sent by envelope format {}, Python {}, dill {} cannot run on this worker "
        "(envelope format {}, Python {}, dill {}): run the client and the workers on the "
        "same Python minor version and the same dill version".format(*theirs, *ours)
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError("envelope payload is not text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(f"envelope payload is not base64: {exc}") from None
