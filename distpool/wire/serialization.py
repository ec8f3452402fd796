"""How callables, arguments and results become bytes and back: payloads.

:func:`dumps` and :func:`loads` use C pickle when it suffices, dill when it does not.
Anything that belongs to the client's ``__main__`` (functions, lambdas, classes) must travel
*by value*, because a worker cannot import the client's script. dill pickles such functions
with their globals *by reference* to ``__main__``; on the worker that reference resolves to
the pool's own namespace module, and the globals they use are shipped beside them and merged
into that namespace. So an initializer's ``global`` assignments are seen by the tasks that
follow it, exactly as in a ``multiprocessing`` worker process.

Both picklers write pickle protocol 5, with large buffers out of band: a
:class:`~distpool.wire.payload.Payload` keeps them apart from the stream, so a NumPy array is
never copied into it. Payloads travel inside envelopes, or beside them as blobs
(:mod:`distpool.wire.envelope`), and are authenticated before anything is loaded. This is the
only module that imports dill.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
import sys
import types
from typing import Any, Callable

import dill

from ..errors import EnvelopeError
from .payload import MIN_OUT_OF_BAND, Payload

PROTOCOL = pickle.HIGHEST_PROTOCOL
PYTHON_VERSION = "{}.{}".format(*sys.version_info[:2])
DILL_VERSION: str = dill.__version__

_C_PICKLE = b"P"
_DILL = b"D"
_MAIN = "__main__"
_MAIN_NAME = _MAIN.encode()


# -- payloads ---------------------------------------------------------------------------

def dumps(obj: Any, *, namespace: types.ModuleType | None = None,
          modules: set[str] | None = None) -> Payload:
    """Serialise ``obj`` for the other side.

    On the client (``namespace`` None), anything of ``__main__`` goes by value through dill.
    On a worker, ``namespace`` is the pool's namespace module: its classes go *by name*, so
    the client rebuilds instances of its own ``__main__`` classes, as multiprocessing does.
    ``modules``, if given, gets the names of the modules whose functions, classes (or the
    modules themselves) the payload refers to by name: what the other side must import.
    Raises whatever the picklers raise when neither can serialise ``obj``.
    """
    if namespace is None:
        buffers = _Buffers()
        found: set[str] = set()
        try:
            if modules is None:
                data = pickle.dumps(obj, PROTOCOL, buffer_callback=buffers.keep)
            else:
                stream = io.BytesIO()
                _ReferencesPickler(stream, found, buffer_callback=buffers.keep).dump(obj)
                data = stream.getvalue()
        except Exception:
            pass
        else:
            # C pickle refers to __main__ objects by name; only the client can resolve those.
            if _MAIN_NAME not in data:
                if modules is not None:
                    modules |= found
                return Payload.pack(_C_PICKLE, data, buffers.views)
        return _dill_dumps(obj, sys.modules[_MAIN], modules)
    stream, buffers = io.BytesIO(), _Buffers()
    try:
        _ByNamePickler(stream, PROTOCOL, buffer_callback=buffers.keep).dump(obj)
    except Exception:
        return _dill_dumps(obj, namespace, None)
    return Payload.pack(_C_PICKLE, stream.getbuffer(), buffers.views)


def loads(payload: Payload, *, namespace: types.ModuleType | None = None) -> Any:
    """Rebuild an object made by :func:`dumps`.

    With a ``namespace`` (on a worker), ``__main__`` resolves to it and the globals shipped
    with by-value functions are added to it, without overwriting what is already there:
    like a multiprocessing worker's module state, the namespace keeps what its initializer
    and earlier tasks set.
    """
    tag, stream, buffers = payload.unpack()
    if tag == _C_PICKLE:
        # Without buffers, no keyword: passing one costs as much as loading a small value.
        return pickle.loads(stream, buffers=buffers) if buffers else pickle.loads(stream)
    if tag == _DILL:
        unpickler = _NamespaceUnpickler(io.BytesIO(stream), namespace or sys.modules[_MAIN],
                                        buffers)
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


class _Buffers:
    """Collects the out-of-band buffers of one pickling, in order."""

    __slots__ = ("views",)

    def __init__(self) -> None:
        self.views: list[memoryview] = []

    def keep(self, buffer: pickle.PickleBuffer) -> bool:
        """``buffer_callback``: a false return takes the buffer out of band."""
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: pickle copies it into the stream
            return True
        if view.nbytes < MIN_OUT_OF_BAND:
            return True
        self.views.append(view)
        return False


class _ReferencesPickler(pickle.Pickler):
    """C pickle, noting the module of each function and class it pickles by name.

    pickle asks ``reducer_override`` of every object but the plainest (ints, floats, strings,
    exact lists, dicts and tuples...), and memoizes what it has pickled, so a map over many
    instances of one class asks about each instance and once about the class."""

    def __init__(self, stream: io.BytesIO, found: set[str], buffer_callback: Any) -> None:
        super().__init__(stream, PROTOCOL, buffer_callback=buffer_callback)
        self._found = found

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _BY_NAME):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self._found.add(module)
        return NotImplemented


#: What pickle saves by name (with ``types.BuiltinFunctionType``, the methods of C types).
_BY_NAME = (type, types.FunctionType, types.BuiltinFunctionType)


def _dill_dumps(obj: Any, main: types.ModuleType, modules: set[str] | None) -> Payload:
    stream, buffers = io.BytesIO(), _Buffers()
    pickler = _GlobalsCapturingPickler(stream, main, buffers, modules)
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
    return Payload.pack(_DILL, stream.getbuffer(), buffers.views)


class _GlobalsCapturingPickler(dill.Pickler):  # type: ignore[misc]
    """dill's pickler, recording every function and class of ``main`` it pickles by value."""

    def __init__(self, file: io.BytesIO, main: types.ModuleType, buffers: _Buffers,
                 modules: set[str] | None) -> None:
        super().__init__(file, PROTOCOL, byref=False, recurse=False,
                         buffer_callback=buffers.keep)
        self._modules = modules
        self.dispatch = _DispatchTable(dill.Pickler.dispatch)
        #: pickle's buffer_callback, which :func:`_save_pickle_buffer` calls in its stead.
        self.keep_buffer: Callable[[pickle.PickleBuffer], bool] = buffers.keep
        # dill writes functions' globals as a reference to ``self._main``'s namespace.
        self._main = main
        self._main_globals = main.__dict__
        self._recorded: set[int] = set()
        self._pending: list[Any] = []

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, (types.FunctionType, type)) and id(obj) not in self._recorded:
            if _belongs_to(obj, self._main_globals):
                self._recorded.add(id(obj))
                self._pending.append(obj)
            elif self._modules is not None and isinstance(obj.__module__, str):
                self._modules.add(obj.__module__)  # another module's: pickled by name
        elif self._modules is not None:
            if isinstance(obj, types.ModuleType) and obj is not self._main:
                self._modules.add(obj.__name__)  # a module in a function's globals
            elif isinstance(obj, types.BuiltinFunctionType) and isinstance(
                    obj.__module__, str):
                self._modules.add(obj.__module__)
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


class _DispatchTable:
    """dill's dispatch table, changed where dill's pure-Python pickle writes other than C
    pickle, so that dill sends what C pickle sends:

    * NumPy arrays: dill's entry pickles them in band (through ``__reduce__``); without it,
      pickle calls ``__reduce_ex__(5)``, and the array's memory goes out of band, as it does
      through C pickle.
    * ``PickleBuffer``: :func:`_save_pickle_buffer` replaces pure-Python pickle's entry.
    * ``bytearray``: memoized (:func:`_save_bytearray`).
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, cls: type, default: Any = None) -> Any:
        if cls is pickle.PickleBuffer:
            return _save_pickle_buffer
        if cls is bytearray:
            return _save_bytearray
        if cls.__name__ == "ndarray" and cls.__module__ == "numpy":
            return default
        return self._table.get(cls, default)


def _save_pickle_buffer(pickler: _GlobalsCapturingPickler, buffer: pickle.PickleBuffer) -> None:
    """Write a ``PickleBuffer`` as C pickle does: out of band if the callback takes it, else
    its bytes in band, memoized under the buffer.

    Pure-Python pickle before 3.13 memoizes the in-band *copy* of the bytes instead. Every
    empty buffer's copy is the one ``b""`` object, so a second empty array failed pickle's
    memo assertion, and a later ``b""`` was loaded as the first one (a ``bytearray``, if that
    buffer was writable). 3.13 fixed the assertion but not the latter.
    """
    with buffer.raw() as view:  # BufferError when not contiguous, as in pickle
        readonly = view.readonly
        if not pickler.keep_buffer(buffer):
            pickler.write(pickle.NEXT_BUFFER + pickle.READONLY_BUFFER if readonly
                          else pickle.NEXT_BUFFER)
            return
        data = view.tobytes()
    size = len(data)
    if not readonly:
        header = pickle.BYTEARRAY8 + struct.pack("<Q", size)
    elif size <= 0xFF:
        header = pickle.SHORT_BINBYTES + struct.pack("<B", size)
    else:
        header = pickle.BINBYTES8 + struct.pack("<Q", size)
    pickler.write(header + data)
    pickler.memoize(buffer)


def _save_bytearray(pickler: _GlobalsCapturingPickler, array: bytearray) -> None:
    """pickle's entry, then memoized as C pickle does: Python 3.9's pure-Python pickle does
    not memoize a bytearray, so one shared in two places came back as two."""
    dill.Pickler.dispatch[bytearray](pickler, array)
    if id(array) not in pickler.memo:
        pickler.memoize(array)


class _NamespaceUnpickler(dill.Unpickler):  # type: ignore[misc]
    """dill's unpickler, resolving ``__main__`` to the given namespace module."""

    def __init__(self, file: io.BytesIO, main: types.ModuleType,
                 buffers: list[memoryview]) -> None:
        super().__init__(file, buffers=buffers)
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
