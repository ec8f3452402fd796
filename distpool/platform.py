"""What differs between the platforms distpool runs on, in one place.

The rest of distpool asks this module instead of testing ``sys.platform`` itself. Two kinds
of difference live here:

* **Decisions** (which process model to refuse, whether to wait in slices): they follow the
  switch :data:`windows`, which the tests turn on to run the Windows branches on Linux (the
  simulated-Windows mode, ``tests/windows_mode``).
* **System calls** (killing a process group, locking a file, a Unix socket): they follow
  ``sys.platform`` itself, spelt so for mypy, which checks each branch on its platform
  (``mypy --strict --platform win32``). POSIX-only calls appear nowhere else in distpool
  (a ruff rule bans them elsewhere).
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import sys
import time
import weakref
from collections.abc import Callable
from typing import IO, Any, Protocol

#: Whether distpool takes Windows' decisions. True on Windows; the simulated-Windows test
#: mode sets it on Linux too.
windows = sys.platform == "win32"

#: How long a blocking wait lasts at most before it is started again, where a wait with no
#: timeout cannot be interrupted: on Windows before Python 3.14, a lock's wait ignores
#: Ctrl-C (python/cpython#80116).
WAIT_SLICE = 0.25


def interruptible_waits() -> bool:
    """Whether a wait with no timeout can be interrupted by Ctrl-C on this platform."""
    return not windows or sys.version_info >= (3, 14)


def waited(wait: Callable[[float | None], bool], timeout: float | None) -> bool:
    """``wait(timeout)`` (a lock's, an event's, a condition's), in slices of
    :data:`WAIT_SLICE` where a long wait could not be interrupted; its result."""
    if interruptible_waits():
        return wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
        if wait(max(0.0, left)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


class Joinable(Protocol):
    """A thread or a process."""

    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


def joined(thread: Joinable, timeout: float | None = None) -> bool:
    """``thread.join(timeout)``, interruptible by Ctrl-C (see :func:`waited`); whether the
    thread (or process) has ended."""

    def join(seconds: float | None) -> bool:
        thread.join(seconds)
        return not thread.is_alive()

    return waited(join, timeout)


def stop_signals() -> list[signal.Signals]:
    """The signals that ask a worker node to stop warmly, besides Ctrl-C's SIGINT: SIGTERM
    (systemd, ``kill``), and on Windows SIGBREAK (Ctrl-Break, and a console's close)."""
    found = [signal.SIGTERM]
    if sys.platform == "win32":
        found.append(signal.SIGBREAK)
    return found


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (a zombie counts as gone). psutil:
    ``os.kill(pid, 0)`` would send CTRL_C_EVENT on Windows."""
    import psutil  # (here: the client, which never needs it, imports this module)

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's: it exists
        return True


def _wait_ended(pids: list[int], timeout: float) -> None:
    """Wait up to ``timeout`` seconds until each of the processes has ended; a zombie has.
    (``psutil.wait_procs`` waits out its whole timeout for a zombie that is not this
    process's child, such as a killed node's slots: orphans, which init reaps when it gets to
    it. That cost every local cluster's stop a second.)"""
    deadline = time.monotonic() + timeout
    while (pids := [pid for pid in pids if process_exists(pid)]) and (
            time.monotonic() < deadline):
        time.sleep(0.01)


def end_process_tree(pid: int, timeout: float = 1.0) -> None:
    """Kill the process ``pid`` and every process it started, at once, and wait up to
    ``timeout`` seconds until each has ended. On POSIX the whole process group is killed
    too (the children that a killed middle process orphaned stay in it); on Windows the
    tree is what psutil finds."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    _kill_group(pid)
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_ended([process.pid for process in tree], timeout)
    deadline = time.monotonic() + timeout
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


if sys.platform == "win32":
    import msvcrt

    #: The signal number of a hard kill (TerminateProcess; ``Process.kill`` sends it).
    KILL = signal.SIGTERM

    def _kill_group(pid: int) -> None:
        """Windows has no process groups to signal: the tree is killed one by one."""

    def _group_alive(pid: int) -> bool:
        return False

    def closed_in_forked_children(file: IO[bytes]) -> None:
        """Nothing: Windows does not fork."""

    def new_process_group() -> dict[str, Any]:
        """``Popen`` options starting the child in a process group of its own, so that a
        console's Ctrl-C reaches only the process that started it."""
        import subprocess

        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}

    def dies_with_parent() -> Callable[[], None] | None:
        """A ``preexec_fn`` that has the child killed when its parent dies (none here)."""
        return None

    def parent_watch() -> Callable[[], bool]:
        """A test of whether this process's parent is gone."""
        import multiprocessing

        parent = multiprocessing.parent_process()
        return lambda: parent is not None and not parent.is_alive()

    def unix_socket() -> socket.socket:
        raise OSError("Unix sockets (unix:// URLs) are not available on Windows")

    def this_user() -> str:
        """A name for this process's user, fit for a path."""
        return os.environ.get("USERNAME") or getpass.getuser()

    def private_to_this_user(status: os.stat_result) -> bool:
        """Whether a directory with ``status`` is this user's alone. (Windows: %TEMP% is
        per user, guarded by its ACL; st_mode says nothing of it.)"""
        return True

    def write_at_start(descriptor: int, data: bytes) -> None:
        """Write ``data`` at the start of the file (Windows has no ``pwrite``)."""
        os.lseek(descriptor, 0, os.SEEK_SET)
        os.write(descriptor, data)

    def lock(descriptor: int, wait: bool) -> bool:
        """Lock the file's first byte for this process, until it closes the file or ends;
        False if another process holds it (after 10 s of retries, with ``wait``)."""
        os.lseek(descriptor, 0, os.SEEK_SET)
        try:  # LK_LOCK retries for 10 s: long enough for a prober to let go
            msvcrt.locking(descriptor, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
else:
    import ctypes
    import fcntl  # noqa: TID251 (POSIX branch)

    KILL = signal.SIGKILL  # noqa: TID251 (POSIX branch)

    def _kill_group(pid: int) -> None:
        try:
            os.killpg(pid, KILL)  # noqa: TID251 (POSIX branch)
        except (ProcessLookupError, PermissionError):
            pass

    def _group_alive(pid: int) -> bool:
        """Whether a process of the group ``pid`` lives on (zombies, whose parent has yet
        to reap them, count as ended)."""
        import psutil

        for process in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(process.pid) == pid and process.status() != psutil.STATUS_ZOMBIE:
                    return True
            except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                continue
        return False

    def closed_in_forked_children(file: IO[bytes]) -> None:
        """Close ``file`` in every child this process forks from now on (a multiprocessing
        worker, say): a child that kept a copy of a pipe's write end would keep its reader
        from ever seeing the end of it."""
        held = weakref.ref(file)

        def close() -> None:
            copy = held()
            if copy is not None:
                copy.close()

        os.register_at_fork(after_in_child=close)

    def new_process_group() -> dict[str, Any]:
        """``Popen`` options starting the child in a session of its own, so that a
        terminal's Ctrl-C reaches only the process that started it."""
        return {"start_new_session": True}

    def dies_with_parent() -> Callable[[], None] | None:
        """A ``preexec_fn`` asking Linux to kill the child when its parent dies."""
        if not sys.platform.startswith("linux"):
            return None
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1

        def preexec() -> None:
            libc.prctl(pr_set_pdeathsig, KILL)

        return preexec

    def parent_watch() -> Callable[[], bool]:
        """A test of whether this process's parent is gone: its parent id changes. (The
        sentinel of a forked child is held open by its siblings.)"""
        parent_id = os.getppid()
        return lambda: os.getppid() != parent_id

    def unix_socket() -> socket.socket:
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # noqa: TID251 (POSIX branch)

    def this_user() -> str:
        return str(os.getuid())  # noqa: TID251 (POSIX branch)

    def private_to_this_user(status: os.stat_result) -> bool:
        return status.st_uid == os.getuid() and not status.st_mode & 0o077  # noqa: TID251

    def write_at_start(descriptor: int, data: bytes) -> None:
        """Write ``data`` at the start of the file, in one system call."""
        os.pwrite(descriptor, data, 0)

    def lock(descriptor: int, wait: bool) -> bool:
        """Lock the file for this process (not its forked children), until it closes the
        file or ends; False if another process holds it (and ``wait`` is False)."""
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True
