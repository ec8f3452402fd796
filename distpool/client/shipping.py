"""What a pool's calls take to the workers besides their payloads: the user's own modules,
as bundles, and the versions of the installed modules they rely on.

``Pool(ship=...)`` (``DISTPOOL_SHIP``) chooses what travels:

* ``"auto"`` (the default): the user's own top-level modules and packages that a call's
  function and arguments refer to, and those they import (:mod:`.modules`);
* off: nothing; the workers must have the user's modules installed;
* a list of modules and paths: those modules, with every data file or directory named by a
  path inside one of them; ``"auto"`` in the list adds what it finds.

A package's bundle holds its ``.py`` files; data files travel only when named; ``.git``,
``__pycache__`` and other dot-directories never do. A package holding a compiled extension is
not shipped (it must be installed on the workers; a warning says so, once). A bundle is
built once and kept, keyed by its files' paths, sizes and modification times, which are
looked at again at most once a second: an edited module travels anew, an unchanged one as
the same bundle, whatever the pool.
"""

from __future__ import annotations

import heapq
import importlib.util
import os
import re
import reprlib
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from ..errors import PayloadTooLargeError, add_note
from ..wire import serialization
from ..wire.bundles import MAX_BUNDLE_SIZE, build
from ..wire.envelope import PendingBundle
from ..wire.payload import Payload, describe_size
from ..wire.versions import module_version
from . import modules
from .modules import INSTALLED, USERS

#: The ``ship`` entry that asks for the user's modules a call refers to.
AUTO = "auto"
#: How long a bundle is trusted before its files are looked at again, in seconds.
RECHECK_AFTER = 1.0
#: Files whose presence makes a package unshippable: compiled for one platform and Python.
COMPILED = (".so", ".pyd", ".dylib", ".dll")
#: Sets of modules whose requirements a pool remembers.
MAX_PLANS = 256

_short_repr = reprlib.Repr()
_short_repr.maxstring = _short_repr.maxother = 80
_SOURCE = ".py"


class Requirements(NamedTuple):
    """What a payload needs on the worker: bundles, and ``(module, version)`` pairs."""

    bundles: tuple[PendingBundle, ...] = ()
    versions: tuple[tuple[str, str], ...] = ()

    def __or__(self, other: object) -> Requirements:
        if not isinstance(other, Requirements):
            return NotImplemented
        if not other.bundles and not other.versions:
            return self
        if not self.bundles and not self.versions:
            return other
        bundles = {bundle.name: bundle for bundle in (*self.bundles, *other.bundles)}
        return Requirements(tuple(bundles[name] for name in sorted(bundles)),
                            tuple(sorted(set(self.versions) | set(other.versions))))


NOTHING = Requirements()


class Serialised(NamedTuple):
    """A callable, its arguments or an initializer as tasks carry it, and what it needs."""

    payload: Payload
    requirements: Requirements = NOTHING


class Serialiser:
    """Serialises what a pool's calls send, with what it needs on the workers (``shipping``
    says; None: nothing, where the workers run from this process's files); raises, naming
    what cannot travel, at the call."""

    def __init__(self, shipping: Shipping | None) -> None:
        self._shipping = shipping

    def serialise(self, obj: Any, what: str) -> Serialised:
        """``obj``, ``what`` it is for an error message."""
        modules: set[str] | None = None if self._shipping is None else set()
        try:
            payload = serialization.dumps(obj, modules=modules)
        except Exception as exc:
            add_note(exc, f"distpool cannot serialise {what}: {_short_repr.repr(obj)}")
            raise
        if modules is None or self._shipping is None:
            return Serialised(payload)
        return Serialised(payload, self._shipping.requirements(modules))

    def chunk(self, items: tuple[Any, ...], first_index: int) -> Serialised:
        """A chunk of a map's input, whose first item is item ``first_index``."""
        try:
            return self.serialise(items, "a chunk of the input")
        except Exception as exc:
            # Only on failure: find which item it was, to name it.
            for offset, item in enumerate(items):
                try:
                    serialization.dumps(item)
                except Exception:
                    add_note(exc, f"distpool cannot serialise item {first_index + offset} "
                                  f"of the input: {_short_repr.repr(item)}")
                    break
            raise


class Shipping:
    """Turns the modules a payload refers to into its :class:`Requirements`, following one
    pool's ``ship`` entries (``()``: ship nothing, compare versions only)."""

    def __init__(self, entries: Sequence[str]) -> None:
        self._auto = AUTO in entries
        self._named: set[str] = set()
        self._data: dict[str, list[tuple[str, str]]] = {}
        self._plans: dict[frozenset[str], _Plan] = {}
        for entry in entries:
            if entry == AUTO:
                continue
            top, data = _resolve(entry)
            self._named.add(top)
            if data is not None:
                self._data.setdefault(top, []).append(data)

    def requirements(self, referenced: Iterable[str]) -> Requirements:
        """What a payload that refers to the modules ``referenced`` needs; raises
        :class:`~distpool.errors.PayloadTooLargeError` for a bundle over the limit."""
        if not referenced and not self._named:
            return NOTHING  # plain data, as most arguments are
        tops = frozenset(modules.top_level(name) for name in referenced) | self._named
        plan = self._plans.get(tops)
        if plan is None or plan.modules_loaded != len(sys.modules):
            plan = self._plan(tops)
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            self._plans[tops] = plan
        if not plan.shipped:
            return plan.unshipped
        bundles, versions = [], list(plan.unshipped.versions)
        for top in plan.shipped:
            bundle = _BUNDLES.get(top, tuple(self._data.get(top, ())))
            if bundle is not None:
                bundles.append(bundle)
            else:  # compiled: the workers' own copy, of a version to compare
                version = module_version(top)
                if version is not None:
                    versions.append((top, version))
        return Requirements(tuple(bundles), tuple(sorted(versions)))

    def _plan(self, tops: frozenset[str]) -> _Plan:
        """Which modules ``tops`` reach, those to ship and the versions of the others: read
        again whenever modules were imported since."""
        loaded = len(sys.modules)
        shipped, versions = [], []
        for top in sorted(modules.closure(tops)):
            kind = modules.kind(top)
            if kind == USERS and (top in self._named or self._auto):
                shipped.append(top)
            elif kind in (USERS, INSTALLED):
                version = module_version(top)
                if version is not None:
                    versions.append((top, version))
        return _Plan(loaded, tuple(shipped), Requirements((), tuple(versions)))


class _Plan(NamedTuple):
    modules_loaded: int
    shipped: tuple[str, ...]
    unshipped: Requirements


def _resolve(entry: str) -> tuple[str, tuple[str, str] | None]:
    """The top-level module a ``ship`` entry names, and for a path inside a package, the
    data it names: ``(its name in the bundle, its path)``. Raises ValueError, naming the
    entry, for one that names nothing this process can import."""
    path = os.path.abspath(entry)
    if os.path.exists(path):
        for directory in (os.path.abspath(entry or os.curdir) for entry in sys.path):
            if not path.startswith(directory + os.sep):
                continue
            name = os.path.relpath(path, directory).replace(os.sep, "/")
            first = name.split("/")[0]
            top = first[:-len(_SOURCE)] if first.endswith(_SOURCE) else first
            if not _MODULE.fullmatch(top) or importlib.util.find_spec(top) is None:
                continue
            return top, None if name == first else (name, path)
        raise ValueError(
            f"ship names {entry!r}, which is not a module, a package or a file inside a "
            "package on the import path (sys.path): only those can be shipped")
    if not _MODULE.fullmatch(entry) or importlib.util.find_spec(
            modules.top_level(entry)) is None:
        raise ValueError(f"ship names {entry!r}: no such file, nor a module this process "
                         "can import")
    return modules.top_level(entry), None


_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class _Bundles:
    """Every bundle this process has built, by top-level module, with what it was built
    from; shared by its pools."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: dict[tuple[str, tuple[tuple[str, str], ...]], _Built] = {}
        self._unshippable: set[str] = set()

    def get(self, top: str, data: tuple[tuple[str, str], ...]) -> PendingBundle | None:
        """The bundle of the user's module ``top`` with the data files under ``data``; None
        if it holds compiled code (warned about once)."""
        key = (top, data)
        with self._lock:
            built = self._built.get(key)
            now = time.monotonic()
            if built is not None and now < built.checked + RECHECK_AFTER:
                return built.bundle
            files = _files(top, data)
            if built is None or built.files != files:
                built = _Built(files, self._build(top, files))
                self._built[key] = built
            built.checked = now
            return built.bundle

    def _build(self, top: str, files: tuple[tuple[str, str, int, int], ...]
               ) -> PendingBundle | None:
        compiled = [path for _, path, _, _ in files if path.endswith(COMPILED)]
        if compiled:
            if top not in self._unshippable:
                self._unshippable.add(top)
                warnings.warn(
                    f"distpool does not ship {top}: it holds compiled code ({compiled[0]}), "
                    f"built for this machine. Install {top} on the workers (its version is "
                    "then compared with this one's).", stacklevel=2)
            return None
        archive = build((name, path) for name, path, _, _ in files)
        if len(archive) > MAX_BUNDLE_SIZE:
            largest = heapq.nlargest(5, files, key=lambda file: file[2])
            raise PayloadTooLargeError(
                f"{top}, as distpool ships it to the workers, is {describe_size(len(archive))}"
                f" compressed, over the {describe_size(MAX_BUNDLE_SIZE)} a bundle may have. "
                "Its largest files: " + ", ".join(
                    f"{path} ({describe_size(size)})" for _, path, size, _ in largest)
                + ". Move data out of the package (or ship=[...] only what the tasks need).")
        return PendingBundle(top, Payload([archive]))


class _Built:
    def __init__(self, files: tuple[tuple[str, str, int, int], ...],
                 bundle: PendingBundle | None) -> None:
        self.files = files
        self.bundle = bundle
        self.checked = 0.0


def _files(top: str, data: tuple[tuple[str, str], ...]
           ) -> tuple[tuple[str, str, int, int], ...]:
    """``(name in the bundle, path, size, modification time)`` of what the bundle of the
    user's module ``top`` holds: its source files (and compiled ones, which stop it), and
    the files of ``data``, each ``(name in the bundle, path)`` of a file or directory."""
    found: dict[str, tuple[str, str, int, int]] = {}

    def add(name: str, path: str) -> None:
        stat = os.stat(path)
        found.setdefault(name, (name, path, stat.st_size, stat.st_mtime_ns))

    for source in modules.source_paths(top):
        if os.path.isdir(source):
            for name, path in _walk(source, top, lambda file: file.endswith(
                    (_SOURCE, *COMPILED))):
                add(name, path)
        else:
            add(os.path.basename(source), source)
    for name, path in data:
        if os.path.isdir(path):
            for member, file in _walk(path, name, lambda file: True):
                add(member, file)
        else:
            add(name, path)
    return tuple(sorted(found.values()))


def _walk(directory: str, prefix: str,
          wanted: Callable[[str], bool]) -> Iterable[tuple[str, str]]:
    """``(name in the bundle, path)`` of the files below ``directory`` that ``wanted`` takes,
    named under ``prefix``; never ``__pycache__`` or a dot-directory (``.git``)."""
    for root, directories, files in os.walk(directory):
        directories[:] = sorted(d for d in directories
                                if d != "__pycache__" and not d.startswith("."))
        relative = os.path.relpath(root, directory)
        base = prefix if relative == "." else f"{prefix}/{relative.replace(os.sep, '/')}"
        for file in sorted(files):
            if wanted(file):
                yield f"{base}/{file}", os.path.join(root, file)


_BUNDLES = _Bundles()
