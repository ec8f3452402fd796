"""The user's own modules on a worker: the bundles a task needs (:mod:`distpool.wire.bundles`),
fetched once per machine and put first on the import path of the process that runs it.

Each bundle is extracted into the machine's cache, a directory named by its hash
(:func:`extracted`): the first process to need it fetches it from the pool's blobs (checked
against its signed size and hash), extracts it beside its final place and renames it there,
under a lock, while the others wait for it; later ones find it. A directory is never written
again once in place, so no stale bytecode can outlive a change: another content is another
directory.

A process holds one version of a module. A task whose bundle provides a module that the
process has already imported from elsewhere (another bundle, an installed copy) is not run
there (:func:`conflict`): a slot puts the message back and is replaced by a fresh process,
as ``maxtasksperchild`` replaces it; where no process is replaced, the task fails, naming
both. Modules are never reloaded: a reloaded module keeps its old functions alive in
whatever refers to them.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence

from ..errors import DistpoolError, ModuleConflictError
from ..platform import lock, private_to_this_user, this_user
from ..wire.bundles import BundleRef, extract
from ..wire.payload import BlobRef, ReadBlob

logger = logging.getLogger("distpool")

#: The environment variable naming the machine's cache directory.
CACHE_VARIABLE = "DISTPOOL_CACHE_DIR"
#: A bundle unused this long is removed when a node starts (seconds).
UNUSED_FOR = 7 * 24 * 3600.0
#: Bundles beyond this many bytes are removed when a node starts, least recently used first,
#: but for those used in the last :data:`IN_USE_FOR` seconds.
CACHE_BYTES = 2 * 2**30
IN_USE_FOR = 3600.0
_EXTRACTING = ".extracting-"


#: Top-level module -> the hash of the bundle this process has put on its path for it.
_mounted: dict[str, str] = {}
#: Held while a thread of this process mounts bundles: the file lock of :func:`extracted`
#: is the process's, which its other threads (Celery's threads pool) would pass.
_mounting = threading.Lock()
#: The top-level modules the worker imported before it ran any task (its own): no fresh
#: process would be without them.
_baseline: frozenset[str] = frozenset()


def record_baseline() -> None:
    """Note the modules this process imported for itself, before any task (see
    :func:`conflict`); called once a worker process is ready."""
    global _baseline
    _baseline = frozenset(name.partition(".")[0] for name in list(sys.modules))


def conflict(bundles: Sequence[BundleRef]) -> ModuleConflictError | None:
    """Why this process cannot run a task that needs ``bundles``, or None: one of their
    modules is imported here already, not from that bundle."""
    for bundle in bundles:
        if _mounted.get(bundle.name) == bundle.digest or not _imported(bundle.name):
            continue
        module = sys.modules.get(bundle.name)
        mounted = _mounted.get(bundle.name)
        where = (f"from bundle {mounted[:12]}" if mounted is not None
                 else f"from {getattr(module, '__file__', None) or 'the worker environment'}")
        replaceable = bundle.name not in _baseline
        advice = ("a fresh process takes the task" if replaceable else
                  "the worker itself imports it: rename the package, or install it on the "
                  "workers and ship=False")
        return ModuleConflictError(
            f"this worker process has imported {bundle.name} already ({where}); the task "
            f"needs bundle {bundle.digest[:12]} of it, which cannot replace it in the same "
            f"process: {advice}", replaceable)
    return None


def mount(bundles: Sequence[BundleRef], fetch: ReadBlob) -> None:
    """Make each bundle's module importable, from its own content, before anything else of
    that name. Raises :class:`ModuleConflictError` where :func:`conflict` finds one."""
    with _mounting:
        problem = conflict(bundles)
        if problem is not None:
            raise problem
        for bundle in bundles:
            if _mounted.get(bundle.name) == bundle.digest:
                continue
            path = extracted(bundle, fetch)
            previous = _mounted.pop(bundle.name, None)
            if previous is not None:  # of a bundle whose module this process never imported
                _remove_from_path(os.path.join(os.path.dirname(path), previous))
            sys.path.insert(0, path)
            _mounted[bundle.name] = bundle.digest
            importlib.invalidate_caches()


def extracted(bundle: BundleRef, fetch: ReadBlob) -> str:
    """The directory of the bundle's content in this machine's cache, fetched and extracted
    first if no process has yet."""
    root = os.path.join(cache_directory(), "bundles")
    target = os.path.join(root, bundle.digest)
    if not os.path.isdir(target):
        os.makedirs(root, exist_ok=True)
        descriptor = os.open(target + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            lock(descriptor, wait=True)
            if not os.path.isdir(target):
                payload = fetch(BlobRef(bundle.digest, bundle.size))  # checked
                started = time.monotonic()
                staging = f"{target}{_EXTRACTING}{uuid.uuid4().hex[:8]}"
                try:
                    extract(payload.contiguous(), bundle.name, staging)
                    os.rename(staging, target)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                logger.info("bundle %s of %s (%d bytes) extracted to %s in %.3f s",
                            bundle.digest[:12], bundle.name, bundle.size, target,
                            time.monotonic() - started)
        finally:
            os.close(descriptor)  # and with it the lock
    try:
        os.utime(target)  # when it was last used, for prune()
    except OSError:
        pass
    return target


def cache_directory() -> str:
    """This machine's directory for bundles: ``$DISTPOOL_CACHE_DIR``, else one of this
    user's in the temporary directory, readable by this user alone. Raises
    :class:`~distpool.errors.DistpoolError` if that directory is someone else's: its code
    would run here."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        os.makedirs(configured, exist_ok=True)
        return configured
    directory = os.path.join(tempfile.gettempdir(), f"distpool-cache-{this_user()}")
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    if os.path.islink(directory) or not private_to_this_user(os.lstat(directory)):
        raise DistpoolError(
            f"{directory} is not this user's alone: distpool will not run code from it. "
            f"Remove it, or set {CACHE_VARIABLE} to a directory of this user's")
    return directory


def prune(now: float | None = None) -> list[str]:
    """Remove from this machine's cache what no task needs any more: bundles unused for
    :data:`UNUSED_FOR`, then, beyond :data:`CACHE_BYTES`, the least recently used (not those
    used in the last :data:`IN_USE_FOR`), and extractions left half done. Called when a node
    starts; returns what it removed."""
    root = os.path.join(cache_directory(), "bundles")
    now = time.time() if now is None else now
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    removed = []
    bundles = []
    for name in names:
        path = os.path.join(root, name)
        try:
            used = os.stat(path).st_mtime
        except OSError:
            continue
        if _EXTRACTING in name:
            if now - used > IN_USE_FOR:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        elif os.path.isdir(path):
            bundles.append((used, path, _size(path)))
    total = sum(size for _, _, size in bundles)
    for used, path, size in sorted(bundles):
        if now - used > UNUSED_FOR or (total > CACHE_BYTES and now - used > IN_USE_FOR):
            shutil.rmtree(path, ignore_errors=True)
            try:
                os.remove(path + ".lock")
            except OSError:
                pass
            total -= size
            removed.append(path)
    return removed


def _imported(top: str) -> bool:
    prefix = top + "."
    return top in sys.modules or any(name.startswith(prefix) for name in list(sys.modules))


def _remove_from_path(path: str) -> None:
    while path in sys.path:
        sys.path.remove(path)
    sys.path_importer_cache.pop(path, None)


def _size(directory: str) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for file in files:
            try:
                total += os.path.getsize(os.path.join(root, file))
            except OSError:
                pass
    return total
