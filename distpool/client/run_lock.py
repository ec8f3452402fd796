"""Who holds a named run: one process at a time, by a lock on the run's ``lock`` file that
the operating system releases when that process dies, however it dies. Byte 0 is the one
locked (Windows forbids others to read a locked byte); ``<host> <pid>`` follows, for people
and ``distpool checkpoints``.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from ..errors import CheckpointError
from ..platform import lock

LOCK_FILE = "lock"
_HOLDER_SIZE = 256
#: A :func:`holder` probe holds a free lock for an instant: a :func:`hold` tries this long at
#: least.
_PROBE_GRACE = 0.1
_O_BINARY = getattr(os, "O_BINARY", 0)

#: The runs this process holds or is taking: never probed, since closing any descriptor of a
#: file releases the process's POSIX lock on it.
_held: set[str] = set()
_held_lock = threading.Lock()


class JournalBusyError(CheckpointError):
    """Another live process holds this run's journal (or this process does already):
    ``host`` and ``pid`` name it, or are None while it is still taking the run."""

    def __init__(self, directory: str, host: str | None, pid: int | None) -> None:
        who = f"process {pid} on {host}" if pid is not None else "a process starting"
        super().__init__(f"the run journal {directory} is held by {who}")
        self.directory, self.host, self.pid = directory, host, pid

    def __reduce__(self) -> tuple[type[JournalBusyError], tuple[str, str | None, int | None]]:
        return (type(self), (self.directory, self.host, self.pid))


def hold(directory: str, wait: float) -> int:
    """The locked descriptor of the run's lock file, with this host and pid written in it."""
    key = os.path.normcase(os.path.realpath(directory))
    with _held_lock:
        if key in _held:
            raise JournalBusyError(directory, socket.gethostname(), os.getpid())
        _held.add(key)
    path = os.path.join(directory, LOCK_FILE)
    deadline = time.monotonic() + max(wait, _PROBE_GRACE)
    try:
        while True:
            os.makedirs(directory, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o600)
            try:
                if lock(descriptor, wait=False) and _same_file(descriptor, path):
                    os.lseek(descriptor, 1, os.SEEK_SET)
                    os.write(descriptor, f"{socket.gethostname()} {os.getpid()}"
                             .encode().ljust(_HOLDER_SIZE))
                    return descriptor
                found = _read_holder(descriptor)
            except BaseException:
                os.close(descriptor)
                raise
            os.close(descriptor)
            if time.monotonic() >= deadline:
                raise JournalBusyError(directory, *found)
            time.sleep(0.02)
    except BaseException:
        with _held_lock:
            _held.discard(key)
        raise


def release(directory: str, owner: int) -> None:
    os.close(owner)  # and with it the lock
    with _held_lock:
        _held.discard(os.path.normcase(os.path.realpath(directory)))


def holder(directory: str) -> str | None:
    """``host:pid`` of the process holding the run now, probed without disturbing it."""
    with _held_lock:
        if os.path.normcase(os.path.realpath(directory)) in _held:
            return f"{socket.gethostname()}:{os.getpid()}"
    try:
        descriptor = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | _O_BINARY)
    except OSError:
        return None
    try:
        if lock(descriptor, wait=False):
            return None
        host, pid = _read_holder(descriptor)
        return f"{host}:{pid}" if pid is not None else "?"
    finally:
        os.close(descriptor)  # and with it the lock, if taken here


def _read_holder(descriptor: int) -> tuple[str | None, int | None]:
    try:
        os.lseek(descriptor, 1, os.SEEK_SET)
        host, pid = os.read(descriptor, _HOLDER_SIZE).decode().split()
        return host, int(pid)
    except (OSError, ValueError):  # not written yet
        return None, None


def _same_file(descriptor: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path))
    except OSError:
        return False
