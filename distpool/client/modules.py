"""Which modules a call relies on, and how each reaches the workers.

Serialising a call's function and arguments names the modules that they refer to by name
(:func:`distpool.wire.serialization.dumps`). Each top-level module among them is one of:

* **the standard library's**, or distpool's and dill's: the workers have their own, of the
  Python and dill versions that every envelope checks already;
* **installed**, its files in a site-packages directory: the worker imports its own copy,
  whose version it compares with the client's (:mod:`distpool.wire.versions`);
* **the user's own**, its files anywhere else (beside the script, a project installed in
  editable mode): it travels to the workers as a bundle (:mod:`.shipping`).

A user's module brings the modules it imports: the user's modules among them travel too,
and the installed ones have their versions compared. A task class that calls a simulator's
wrapper needs the wrapper at the client's version, though no payload names it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import site
import sys
import sysconfig
import types
from collections.abc import Iterable
from typing import NamedTuple

STDLIB, INSTALLED, USERS = "the standard library", "installed", "the user's own"
#: Modules that every worker has at the client's version (the envelope checks dill's).
_CHECKED_ELSEWHERE = frozenset({"__main__", "builtins", "distpool", "dill"})


def top_level(module: str) -> str:
    return module.partition(".")[0]


def kind(top: str) -> str | None:
    """What the top-level module ``top`` is (see above); None if it has no files (built
    into the interpreter, frozen) or cannot be imported."""
    found = _kinds.get(top)
    if found is None:
        found = _kind(top)
        if found is not None:  # (one that cannot be imported yet may be later)
            _kinds[top] = found
    return found


_kinds: dict[str, str] = {}


def _kind(top: str) -> str | None:
    if top in _CHECKED_ELSEWHERE or top in _stdlib_names():
        return STDLIB
    paths = source_paths(top)
    if not paths:
        return None
    places = _places()
    if all(_within(path, places.site) for path in paths):
        return INSTALLED
    if all(_within(path, places.stdlib) for path in paths):
        return STDLIB
    if _is_distpools_requirement(top):
        return INSTALLED  # one of distpool's, installed in editable mode: never shipped
    return USERS


def source_paths(top: str) -> list[str]:
    """Where the top-level module ``top`` lives: its file, or a package's directories
    (several for a namespace package); empty if it has no files, or cannot be imported."""
    module = sys.modules.get(top)
    if module is not None:
        package_paths = getattr(module, "__path__", None)
        file = getattr(module, "__file__", None)
    else:  # named in ship=[...], and not imported yet
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return []
        package_paths, file = spec.submodule_search_locations, spec.origin
    if package_paths is not None:
        return [os.path.abspath(path) for path in list(package_paths)]
    return [os.path.abspath(file)] if isinstance(file, str) and os.path.exists(file) else []


def imports_of(top: str) -> set[str]:
    """The other top-level modules that the loaded modules of the user's package (or
    module) ``top`` import: those of the modules, functions and classes in their globals.
    Read again whenever modules were imported since."""
    return set(_imports_of(top, len(sys.modules)))


@functools.lru_cache(maxsize=256)
def _imports_of(top: str, _modules_loaded: int) -> frozenset[str]:
    found: set[str] = set()
    prefix = top + "."
    for name, module in list(sys.modules.items()):
        if module is None or (name != top and not name.startswith(prefix)):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType):
                found.add(top_level(value.__name__))
            elif isinstance(value, (type, types.FunctionType)):
                owner = getattr(value, "__module__", None)
                if isinstance(owner, str):
                    found.add(top_level(owner))
    found.discard(top)
    return frozenset(found)


def closure(tops: Iterable[str]) -> set[str]:
    """``tops`` and, of those that are the user's own, every top-level module they import,
    again and again."""
    reached = set(tops)
    pending = [top for top in reached if kind(top) == USERS]
    while pending:
        for imported in imports_of(pending.pop()):
            if imported not in reached:
                reached.add(imported)
                if kind(imported) == USERS:
                    pending.append(imported)
    return reached


class _Places(NamedTuple):
    site: list[str]
    stdlib: list[str]


def _places() -> _Places:
    # Any directory of installed packages on the path counts too: pip install --target, a
    # distribution's dist-packages, a site directory added by a .pth file.
    on_path = [os.path.abspath(entry) for entry in sys.path
               if os.path.basename(entry) in ("site-packages", "dist-packages")]
    site_dirs, stdlib = _installation()
    return _Places([*site_dirs, *on_path], stdlib)


@functools.lru_cache(maxsize=1)
def _installation() -> tuple[list[str], list[str]]:
    """This Python's site-packages directories, and its standard library's."""
    paths = sysconfig.get_paths()
    site_dirs = {paths["purelib"], paths["platlib"]}
    try:
        site_dirs.update(site.getsitepackages())
    except AttributeError:  # an old virtualenv's site module
        pass
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if isinstance(user_site, str):
        site_dirs.add(user_site)
    stdlib = {paths["stdlib"], paths["platstdlib"]}
    return ([os.path.abspath(d) for d in site_dirs if d],
            [os.path.abspath(d) for d in stdlib if d])


def _within(path: str, directories: list[str]) -> bool:
    return any(path == directory or path.startswith(directory + os.sep)
               for directory in directories)


def _is_distpools_requirement(top: str) -> bool:
    """Whether ``top`` is the module of a distribution that distpool needs, directly or not
    (installed in editable mode, so outside site-packages). Only a distribution named after
    its module is recognised: looking further reads every installed distribution's metadata,
    which would cost a first pool tens of milliseconds."""
    import importlib.metadata  # (see distpool.wire.versions.module_version)

    try:
        distribution = importlib.metadata.distribution(top)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return _canonical(distribution.metadata["Name"] or "") in _distpools_requirements()


@functools.lru_cache(maxsize=1)
def _distpools_requirements() -> frozenset[str]:
    """The distributions distpool needs, directly or not, by their canonical names."""
    import importlib.metadata

    seen: set[str] = set()
    pending = ["distpool"]
    while pending:
        try:
            requirements = importlib.metadata.requires(pending.pop()) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            if "extra ==" in requirement:
                continue
            name = _canonical(re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0])
            if name not in seen:
                seen.add(name)
                pending.append(name)
    return frozenset(seen)


def _canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


@functools.lru_cache(maxsize=1)
def _stdlib_names() -> frozenset[str]:
    names = getattr(sys, "stdlib_module_names", None)  # Python 3.10+
    return frozenset(names) if names is not None else frozenset(sys.builtin_module_names)
