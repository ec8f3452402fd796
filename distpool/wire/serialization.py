"""How callables, arguments and results become bytes and back: payloads.

:func:`dumps` and :func:`loads` use C pickle when it suffices, dill when it does not.
Anything that belongs to the client's ``__main__`` (functions, lambdas, classes) must travel
*by value*, because a worker cannot import the client's script. dill pickles such functions
with their globals *by reference* to ``__main__``; on the worker that reference resolves to
the pool's own namespace module, and the globals they use are shipped beside them and merged
into that namespace. So an initializer's ``global`` assignments are seen by the tasks that
follow it, exactly as in a ``multiprocessing`` worker process.

Payloads travel inside envelopes (:mod:`distpool.wire.envelope`), which are authenticated before
any payload is loaded. This is the only module that imports dill.
"""

from __future__ import annotations

import functools
import io
import pickle
import sys
import types
from typing import Any

import dill

from ..errors import EnvelopeError

PROTOCOL = pickle.HIGHEST_PROTOCOL
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
