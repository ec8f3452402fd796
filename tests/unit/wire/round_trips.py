"""Round trips of a value through every route distpool's serialiser gives it, each compared
with the value and with what pickle itself makes of it.

Routes: as a task's argument (C pickle), beside a function of ``__main__`` (dill), as a global
of such a function (dill, rebuilt in a worker's namespace), and back as a result, by name and
beside a function of the namespace (dill). Each payload is loaded as made and as received
(its bytes in one ``bytes``, or in a ``bytearray`` as a blob is read), so that the buffers
travel out of band as they do between processes.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types
from collections.abc import Iterator
from typing import Any, Callable

from distpool.wire import serialization
from distpool.wire.payload import Payload

#: The user's script: a function that reads a global, which travels with it by value.
SCRIPT = "def read():\n    return VALUE\n"

#: Types that pickle memoizes: one object twice in the value is one object twice in the copy.
_SHARED_BY_IDENTITY = (list, dict, set, bytearray)


@contextlib.contextmanager
def script_main(value: Any) -> Iterator[types.ModuleType]:
    """A module standing in for the user's script, with ``VALUE = value``, as ``__main__``."""
    main = types.ModuleType("__main__")
    main.VALUE = value  # type: ignore[attr-defined]
    exec(compile(SCRIPT, "<script>", "exec"), main.__dict__)
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = main
    try:
        yield main
    finally:
        sys.modules["__main__"] = saved


def as_received(payload: Payload) -> Iterator[Payload]:
    """The payload as made, and as the other side gets it: one ``bytes``, or a blob read
    into a ``bytearray``."""
    yield payload
    yield Payload([payload.to_bytes()])
    yield Payload([bytearray(payload.to_bytes())])


def round_trips(value: Any) -> Iterator[tuple[str, Any]]:
    """``(route, copy)`` for each route a value can take, and each form it arrives in."""
    with script_main(value) as main:
        routes: list[tuple[str, Payload, Callable[[Payload], Any]]] = [
            ("an argument", serialization.dumps(value), serialization.loads),
            ("an argument beside a __main__ function", serialization.dumps((main.read, value)),
             lambda payload: _in_new_namespace(payload)[1]),
            ("a global of a __main__ function", serialization.dumps(main.read),
             lambda payload: _in_new_namespace(payload)()),
        ]
        namespace = serialization.new_namespace()
        read_on_worker = serialization.loads(routes[2][1], namespace=namespace)
        routes += [
            ("a result", serialization.dumps(value, namespace=namespace), serialization.loads),
            ("a result beside a function of the namespace",
             serialization.dumps((read_on_worker, value), namespace=namespace),
             lambda payload: serialization.loads(payload)[1]),
        ]
        for route, payload, load in routes:
            for received in as_received(payload):
                yield route, load(received)


def _in_new_namespace(payload: Payload) -> Any:
    # A namespace keeps the globals it already has: each load gets a fresh one.
    return serialization.loads(payload, namespace=serialization.new_namespace())


def assert_round_trips(value: Any) -> None:
    """Every route gives back a copy equal to ``value``, with the flags pickle gives it."""
    pickled = pickle.loads(pickle.dumps(value, serialization.PROTOCOL))
    for route, copy in round_trips(value):
        try:
            assert_same(value, pickled, copy, {})
        except AssertionError as exc:
            raise AssertionError(f"as {route}: {exc}") from exc


def assert_same(original: Any, pickled: Any, copy: Any, seen: dict[int, Any],
                path: str = "value") -> None:
    """``copy`` equals ``original``; where pickle changes what it copies (an array's layout,
    a read-only flag), ``copy`` is as ``pickled``, pickle's own copy, is. ``seen`` maps the
    objects met so far to their copies: one object twice must come back as one object."""
    if isinstance(original, _SHARED_BY_IDENTITY) or _is_array_or_table(original):
        if id(original) in seen:
            assert copy is seen[id(original)], f"{path}: a second object where one was shared"
            return
        seen[id(original)] = copy
    assert type(copy) is type(original), f"{path}: {type(copy)} for {type(original)}"
    if _is_array_or_table(original):
        _assert_same_array_or_table(original, pickled, copy, seen, path)
    elif isinstance(original, (list, tuple)):
        assert len(copy) == len(original), f"{path}: {len(copy)} items for {len(original)}"
        for index, item in enumerate(original):
            assert_same(item, pickled[index], copy[index], seen, f"{path}[{index}]")
    elif isinstance(original, dict):
        assert list(copy) == list(original), f"{path}: keys {list(copy)} for {list(original)}"
        for key, item in original.items():
            assert_same(item, pickled[key], copy[key], seen, f"{path}[{key!r}]")
    elif isinstance(original, float) and math.isnan(original):
        assert math.isnan(copy), f"{path}: {copy!r} for nan"
    else:
        assert copy == original, f"{path}: {copy!r} for {original!r}"


def _is_array_or_table(value: Any) -> bool:
    return type(value).__module__.partition(".")[0] in ("numpy", "pandas")


def _assert_same_array_or_table(original: Any, pickled: Any, copy: Any,
                                seen: dict[int, Any], path: str) -> None:
    import numpy

    if type(original).__module__.startswith("pandas"):
        import pandas.testing

        if isinstance(original, pandas.DataFrame):
            pandas.testing.assert_frame_equal(copy, original, obj=path)
        elif isinstance(original, pandas.Series):
            pandas.testing.assert_series_equal(copy, original, obj=path)
        elif isinstance(original, pandas.Index):
            pandas.testing.assert_index_equal(copy, original, obj=path)
        elif isinstance(original, pandas.api.extensions.ExtensionArray):
            pandas.testing.assert_extension_array_equal(copy, original)
        else:
            assert copy == original, f"{path}: {copy!r} for {original!r}"
        return
    if not isinstance(original, numpy.ndarray):  # a NumPy scalar
        numpy.testing.assert_array_equal(copy, original, err_msg=path)
        return
    assert (copy.dtype, copy.shape) == (original.dtype, original.shape), \
        f"{path}: {copy.dtype} {copy.shape} for {original.dtype} {original.shape}"
    for flag in ("C_CONTIGUOUS", "F_CONTIGUOUS", "WRITEABLE"):
        assert copy.flags[flag] == pickled.flags[flag], \
            f"{path}: {flag} {copy.flags[flag]} where pickle gives {pickled.flags[flag]}"
    if original.dtype.hasobject:
        for index in numpy.ndindex(original.shape):
            assert_same(original[index], pickled[index], copy[index], seen, f"{path}{index}")
    else:
        numpy.testing.assert_array_equal(copy, original, err_msg=path)
