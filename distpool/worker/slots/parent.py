"""The default process model of ``distpool worker``: one worker process per slot.

``distpool worker --concurrency N`` runs N Celery workers of one slot each under one parent.
A slot's task runs in a thread of the worker process that took its message (Celery's
``threads`` pool, one thread). That saves the hand-off to a pool process and back, which in
Celery's prefork pool idles each process about 5 ms between two tasks; the worker's event
loop stays free to answer remote control and send heartbeats while the task runs; and it
works on Windows, where prefork is not supported.

What prefork's main process does for its pool processes, the parent does for the slots. It
reads what each slot runs from the slot's state file (:mod:`distpool.worker.slots.state`), and:

* replaces a slot that exits;
* puts the message a dead slot ran back on the queue at once (``recovery.requeue``), with
  those it had taken and not begun (``recovery.release``); the worker that receives it
  counts the attempt, so a task that keeps killing its process fails after a bounded number
  of attempts instead of returning forever;
* kills a slot whose message runs past its hard time limit, having first marked the message
  (``recovery.timed_out``), so that its tasks fail with ``TaskTimeoutError``.

Slots are started with multiprocessing's default start method: forked on Linux, from a
process that has already imported Celery, so a slot starts in milliseconds; a fresh
interpreter on Windows and macOS.

Restarts. A slot that dies running a message, or that the parent kills for its time limit,
is replaced at once: that death is its task's, whose attempts are bounded. So is a slot that
ended itself cleanly (``--max-tasks-per-child``). A slot that fails on its own (exits with
an error or is killed while idle) is restarted after a backoff of its own
(:class:`~distpool.restarts.Backoff`): 1 s after its first failure in a row, then 2, 4, ...
up to 60 s; once it has stayed up 60 s, its next failure is a first again. One flapping slot
thus costs a fork a minute and never takes the healthy slots down with it.

Giving up. The node exits, with status 1, only when every one of its slots has failed 6
times in a row (at least 1 + 2 + 4 + 8 + 16 s of backoff) and none has stayed up 60 s since:
then it serves nothing, and exiting tells its service manager (systemd, NSSM, the local
cluster's supervisor) and whoever watches it, instead of a node that looks alive and does no
work. While any slot stays up, it never gives up: exiting would stop working slots and mend
nothing that restarting the failing ones does not.

Logging. The parent logs its own life (a slot died, its message put back, the slot replaced,
backing off, giving up and why, stopping) to stderr, at ``--loglevel`` (WARNING by default
shows all of these), in lines that name the node. Each slot is a Celery worker that
configures its own logging; a forked slot drops the parent's handler first, so that nothing
is logged twice.

Leftovers. The slots' state files live in a directory ``distpool-slots-*`` of the system's
temporary directory, removed when the node stops. The parent locks a file in it for as long
as it lives; the operating system releases the lock when the parent dies, however it dies.
A node that starts removes the directories whose lock it can take: their parents are gone
(SIGKILL, a crash). The directory of a live node is locked and left alone, whatever the
age of its pid, which the system may since have given to another process: the pid in the
file is for people only.
"""

from __future__ import annotations

import glob
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Protocol

from .restarts import Backoff
from .state import Running, SlotState

logger = logging.getLogger("distpool")

#: How long the slots get to finish their running tasks when the parent is stopped.
STOP_TIMEOUT = 30.0
#: How often the parent looks at its slots.
CHECK_INTERVAL = 0.2
#: How often a slot looks for its parent (where it cannot wait on it).
PARENT_CHECK_INTERVAL = 1.0
#: The node gives up when every slot has failed this many times in a row (see above).
GIVE_UP_FAILURES = 6
#: The slots' state directories, in the system's temporary directory, are named so.
DIRECTORY_PREFIX = "distpool-slots-"
#: The file of a state directory that its parent keeps locked, with its pid in it.
OWNER_FILE = "owner"

_O_BINARY = getattr(os, "O_BINARY", 0)
#: The state directories of this process: never probed, since closing any descriptor of a
#: file releases the process's POSIX lock on it.
_ours: set[str] = set()


class Recovery(Protocol):
    """What becomes of the message of a slot that is gone (the broker's business)."""

    def timed_out(self, running: Running) -> None:
        """Record that the message ran out of time; called before its slot is killed."""

    def requeue(self, running: Running) -> None:
        """Put the message back on the queue, if the broker does not do so itself."""

    def release(self, holder: str) -> None:
        """Put back what the gone slot's consumer ``holder`` had taken and not yet run."""


class _Slot:
    def __init__(self, index: int, state: SlotState, backoff: Backoff | None = None) -> None:
        self.index = index
        self.state = state
        self.backoff = backoff or Backoff()  # for failures of its own, not its tasks'
        #: None while the slot waits out its backoff, until ``restart_at``.
        self.process: BaseProcess | None = None
        self.restart_at = 0.0
        #: Whether the next start replaces a process that died (logged as such).
        self.replacing = False


def run_slots(target: Callable[[list[str]], int], argv_for: Callable[[int, str], list[str]],
              concurrency: int, recovery: Recovery, node: str = "distpool",
              loglevel: str = "WARNING") -> int:
    """Run ``concurrency`` slots, each ``target(argv_for(index, state_path))`` in a process of
    its own, until SIGTERM or Ctrl-C. Returns 1 if every slot keeps failing. Logs to stderr,
    as ``node``, at ``loglevel``."""
    stop = threading.Event()
    context = multiprocessing.get_context()
    level = logger.level
    handler = _log_to_stderr(node, loglevel)
    try:
        for path in remove_leftovers():
            logger.info("removed %s, left behind by a node that is gone", path)
        directory = _StateDirectory()
        slots = [_Slot(index, SlotState(os.path.join(directory.path, f"slot-{index}")))
                 for index in range(concurrency)]

        def start(slot: _Slot) -> None:
            slot.state.idle()  # a replacement must not inherit its predecessor's message
            slot.process = context.Process(target=_slot_main, name=f"distpool-slot-{slot.index}",
                                           args=(target, argv_for(slot.index, slot.state.path)))
            slot.process.start()
            slot.backoff.started()
            logger.log(logging.WARNING if slot.replacing else logging.INFO,
                       "slot %d %s: pid %s", slot.index,
                       "replaced" if slot.replacing else "started", slot.process.pid)
            slot.replacing = False

        try:
            for slot in slots:
                start(slot)
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            while not stop.wait(CHECK_INTERVAL):
                if not _tend_all(slots, recovery, start, time.monotonic()):
                    return 1
            logger.warning("stopping (SIGTERM): running tasks get %g s to finish", STOP_TIMEOUT)
        except KeyboardInterrupt:
            logger.warning("stopping (Ctrl-C): running tasks get %g s to finish", STOP_TIMEOUT)
        finally:
            _stop_all([slot.process for slot in slots if slot.process is not None])
            directory.remove()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return 0


def _tend_all(slots: Sequence[_Slot], recovery: Recovery, start: Callable[[_Slot], None],
              now: float) -> bool:
    """One look at every slot: tend the live ones, start those due. False: give up."""
    for slot in slots:
        if slot.process is None:
            if now >= slot.restart_at:
                start(slot)
            continue
        delay = _tend(slot, recovery)
        if delay is None:
            continue
        slot.process = None
        slot.restart_at = now + delay
        if delay <= 0:
            start(slot)
    if all(slot.backoff.failing(GIVE_UP_FAILURES) for slot in slots):
        logger.error("giving up: every slot has failed %d times in a row, none stayed up "
                     "%g s since; this node serves nothing, so it stops (exit status 1)",
                     GIVE_UP_FAILURES, slots[0].backoff.stable_after)
        return False
    return True


def _slot_main(target: Callable[[list[str]], int], argv: list[str]) -> None:
    # A forked slot inherits the parent's SIGTERM handler until Celery installs its own, and
    # its log handler, which would log each of the slot's records a second time.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _drop_parent_logging()
    threading.Thread(target=_stop_with_parent, name="distpool-parent-watch",
                     daemon=True).start()
    sys.exit(target(argv))


def _stop_with_parent() -> None:
    """Shut the slot down warmly (its running task finishes) once its parent is gone, killed
    outright, say: unsupervised, a slot that died would not be replaced, nor would its
    message be put back or its time limit enforced."""
    if sys.platform == "win32":
        parent = multiprocessing.parent_process()
        if parent is None:
            return
        multiprocessing.connection.wait([parent.sentinel])
    else:  # the sentinel of a forked slot is held open by its siblings; the parent id is not
        parent_id = os.getppid()
        while os.getppid() == parent_id:
            time.sleep(PARENT_CHECK_INTERVAL)
    logger.warning("the parent of this slot is gone; shutting down")
    signal.raise_signal(signal.SIGTERM)


def _tend(slot: _Slot, recovery: Recovery) -> float | None:
    """Kill the slot if its message ran out of time; put the message of a slot that is gone
    back on the queue. None while the slot lives on, else the seconds to wait before its
    replacement starts."""
    process = slot.process
    assert process is not None
    alive = process.is_alive()
    running = slot.state.read()  # read after is_alive: a dead slot's state is final
    if alive:
        if running is None or running.kill_at is None or time.time() < running.kill_at:
            return None
        logger.warning("slot %d (pid %s): message %s ran past its time limit; killing the "
                       "slot, putting the message back on the queue", slot.index, process.pid,
                       running.message_id)
        recovery.timed_out(running)
        process.kill()
        process.join()
        _release(slot, recovery)
        recovery.requeue(running)
        slot.backoff.ended()
        slot.replacing = True
        return 0.0
    how = _exit_description(process.exitcode)
    # The messages it took and had not begun, then the one it ran, older, to be first again.
    _release(slot, recovery)
    if running is not None:
        # Killed by its task, whose attempts are bounded: not held against the slot.
        logger.warning("slot %d (pid %s) died (%s) running message %s; putting the message "
                       "back on the queue", slot.index, process.pid, how, running.message_id)
        recovery.requeue(running)
        slot.backoff.ended()
        slot.replacing = True
        return 0.0
    if process.exitcode == 0:  # it chose to end: --max-tasks-per-child
        logger.info("slot %d (pid %s) ended itself", slot.index, process.pid)
        slot.backoff.ended()
        return 0.0
    delay = slot.backoff.failed()
    logger.warning("slot %d (pid %s) died while idle (%s), %d time(s) in a row; restarting "
                   "it in %g s", slot.index, process.pid, how, slot.backoff.failures, delay)
    slot.replacing = True
    return delay


def _release(slot: _Slot, recovery: Recovery) -> None:
    holder = slot.state.read_holder()  # before a replacement's start clears the file
    if holder:
        recovery.release(holder)


def _exit_description(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            pass
    return f"exit code {exitcode}"


def _stop_all(processes: Sequence[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM, Celery's warm shutdown (on Windows, a kill)
    for process in processes:
        process.join(STOP_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()


class _ParentHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The parent's handler: stderr, in lines that name the node."""


def _log_to_stderr(node: str, loglevel: str) -> logging.Handler:
    handler = _ParentHandler(sys.stderr)
    node = node.replace("%", "%%")  # a literal in the format
    handler.setFormatter(logging.Formatter(f"[%(asctime)s: %(levelname)s/{node}] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(loglevel.upper())
    return handler


def _drop_parent_logging() -> None:
    for handler in list(logger.handlers):
        if isinstance(handler, _ParentHandler):
            logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)  # the slot's Celery sets the level, on the root logger


class _StateDirectory:
    """This node's directory of slot state files, with its owner file locked while the
    parent lives (see Leftovers above)."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix=DIRECTORY_PREFIX)
        _ours.add(self.path)
        self._owner = os.open(os.path.join(self.path, OWNER_FILE),
                              os.O_RDWR | os.O_CREAT | _O_BINARY, 0o600)
        # Blocking: a starting node may be probing the new file for an instant. The pid is
        # written once locked: an empty owner file tells a prober it is being set up.
        if _lock(self._owner, wait=True):
            os.write(self._owner, f"{os.getpid()}\n".encode("ascii"))
        else:
            logger.warning("cannot lock %s; if this node is killed, the directory stays",
                           self.path)

    def remove(self) -> None:
        _remove(self.path, before_the_owner_file=lambda: os.close(self._owner))
        _ours.discard(self.path)


def remove_leftovers(directory: str | None = None) -> list[str]:
    """Remove the slot state directories in ``directory`` (the system's temporary directory)
    whose parent is gone; return their paths."""
    removed = []
    pattern = os.path.join(directory or tempfile.gettempdir(), DIRECTORY_PREFIX + "*")
    for path in glob.glob(pattern):
        if path not in _ours and _abandoned(path):
            _remove(path)
            removed.append(path)
    return removed


def _abandoned(path: str) -> bool:
    try:
        owner = os.open(os.path.join(path, OWNER_FILE), os.O_RDWR | _O_BINARY)
    except OSError:  # not a node's, another user's, or an older distpool's: not ours to judge
        return False
    try:
        if not _lock(owner, wait=False):
            return False  # its parent lives
        os.lseek(owner, 0, os.SEEK_SET)
        return bool(os.read(owner, 64).strip())  # empty: its parent is still setting it up
    except OSError:
        return False
    finally:
        os.close(owner)  # and with it the lock taken here


def _remove(path: str, before_the_owner_file: Callable[[], None] = lambda: None) -> None:
    """Remove a state directory, its owner file last: a directory that cannot be removed
    whole (on Windows, a slot that still runs holds its file open) keeps it, and the next
    node to start tries again."""
    try:
        names = os.listdir(path)
    except OSError:
        names = []
    for name in names:
        if name != OWNER_FILE:
            try:
                os.remove(os.path.join(path, name))
            except OSError:
                pass
    before_the_owner_file()
    try:
        if os.listdir(path) == [OWNER_FILE]:
            os.remove(os.path.join(path, OWNER_FILE))
        os.rmdir(path)
    except OSError:
        pass


if sys.platform == "win32":
    import msvcrt

    def _lock(descriptor: int, wait: bool) -> bool:
        """Lock the file's first byte for this process, until it closes the file or ends."""
        os.lseek(descriptor, 0, os.SEEK_SET)
        try:  # LK_LOCK retries for 10 s: long enough for a prober to let go
            msvcrt.locking(descriptor, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
else:
    import fcntl

    def _lock(descriptor: int, wait: bool) -> bool:
        """Lock the file for this process (not its forked slots), until it closes the file
        or ends."""
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True
