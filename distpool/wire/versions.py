"""Versions of installed modules, looked up the same way on the client and on the workers.

A function or class of an installed package (numpy, a simulator's wrapper) travels by
reference: the worker imports its own copy, which may be another version than the client's.
The client names the versions its calls rely on in each envelope; the worker compares them
with its own before it runs the task (:func:`differences`), and says which differ, on which
host: a warning, or with ``strict_versions`` an error instead of the run.
"""

from __future__ import annotations

import functools
import re
import socket
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import importlib.metadata


@functools.cache
def module_version(module: str) -> str | None:
    """The version of the installed top-level module ``module``: its distribution's (found by
    the module's name, else through the distributions' lists of top-level modules), else the
    module's own ``__version__`` if it is imported; None if it has neither, or is not
    installed here."""
    # Imported here: importlib.metadata brings the email package, a sixth of what importing
    # distpool's Pool would cost.
    import importlib.metadata

    try:
        return importlib.metadata.version(module)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        pass
    for distribution in distributions_providing(module):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    version = getattr(sys.modules.get(module), "__version__", None)
    return version if isinstance(version, str) else None


def distributions_providing(module: str) -> list[str]:
    """The installed distributions that provide the top-level module ``module``, by their
    normalised names."""
    return _distributions_by_module().get(module, [])


@functools.lru_cache(maxsize=1)
def _distributions_by_module() -> dict[str, list[str]]:
    """Top-level module -> the distributions that provide it. Read once per process, and
    only for a module whose distribution is not named after it (``sklearn``, ``yaml``): it
    reads every installed distribution's metadata."""
    import importlib.metadata

    provided: dict[str, list[str]] = {}
    for distribution in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", distribution.metadata["Name"] or "").lower()
        for top in top_levels(distribution):
            provided.setdefault(top, []).append(name)
    return provided


def top_levels(distribution: importlib.metadata.Distribution) -> set[str]:
    """What the distribution installs at the top of the import path: its ``top_level.txt``
    (setuptools writes one), else the first part of the paths of its files."""
    listed = distribution.read_text("top_level.txt")
    if listed is not None:
        return set(listed.split())
    tops = set()
    for file in distribution.files or ():
        first = file.parts[0] if file.parts else ""
        if first.endswith(".py"):
            tops.add(first[:-3])
        elif first and "." not in first and first != "__pycache__":
            tops.add(first)
    return tops


def differences(theirs: Iterable[tuple[str, str]]) -> list[str]:
    """Each module of ``theirs`` (the client's ``(module, version)`` pairs) whose version
    here differs, described for the client: the module, both versions and this host."""
    host = socket.gethostname()
    found = []
    for module, version in theirs:
        ours = module_version(module)
        if ours != version:
            here = "is not installed" if ours is None else f"is {ours}"
            found.append(f"{module} is {version} on the client but {here} on worker host "
                         f"{host}")
    return found
