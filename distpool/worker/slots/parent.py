"""The default process model of ``distpool worker``: one worker process per slot.

``distpool worker --concurrency N`` (:func:`distpool.worker.node.run`) runs N Celery workers
of one slot each under one parent, :func:`run_slots`: slot ``i`` of node ``<node>@<host>``
is the Celery node ``<node>-<i>@<host>``. A slot's task runs in a thread of the worker
process that took its message: on a Redis broker the thread that takes it
(:mod:`.intake`), else Celery's ``threads`` pool, of one thread. That saves the hand-off to
a pool process and back, which in Celery's prefork pool idles each process between two
tasks; the worker's event loop stays free to answer remote control and send heartbeats
while the task runs; and it works on Windows, where prefork is not supported.

What prefork's main process does for its pool processes, the parent does for the slots. It
reads what each slot runs from the slot's state file (:mod:`distpool.worker.slots.state`), and:

* replaces a slot that exits;
* puts the message a dead slot ran back on the queue at once (``recovery.requeue``), with
  those it had taken and not begun (``recovery.release``); the worker that receives it
  counts the attempt, so a task that keeps killing its process fails after a bounded number
  of attempts instead of returning forever;
* kills a slot whose message runs past its hard time limit, having first marked the message
  (``recovery.timed_out``), so that its tasks fail with ``TaskTimeoutError``;
* kills a slot that goes on running a message of a pool that has ended (terminated, or its
  client gone): the slot's own watchdog and a revoke do that at once, unless the task holds
  the GIL in native code, where neither of the slot's threads runs;
* publishes the node's record, what each slot runs, for ``distpool status`` (:mod:`.report`).

Each slot is a :class:`multiprocessing.Process` running :func:`.child.run_slot`, with
multiprocessing's default start method: forked on Linux, from a process that has already
imported Celery, so a slot starts in milliseconds; a fresh interpreter on Windows and macOS,
which gets the settings pickled. A slot shuts down warmly when its parent dies (see
:mod:`.child`).

Stopping. SIGTERM, Ctrl-C, and on Windows Ctrl-Break (SIGBREAK) stop the node warmly: the
parent sets the node's stop (:class:`.child.NodeStop`), on which each slot asks its Celery
for a warm shutdown (a stop needs no signal sent to another process, which Windows cannot do: there,
``Process.terminate()`` is a kill). Running tasks get ``stop_timeout`` seconds to finish; a
slot still running then is killed and its message put back on the queue, as for a slot
that died. A second Ctrl-C does that at once. A console's Ctrl-C reaches the slots too, and
Celery's warm shutdown is what they do with it.

Restarts. A slot that dies running a message, or that the parent kills for its time limit,
is replaced at once: that death is its task's, whose attempts are bounded. So is a slot that
ended itself cleanly (a pool's ``maxtasksperchild``, ``--max-tasks-per-child``: see
:mod:`.child`, Retiring). A slot that fails on its own (exits with an error or is killed
while idle) is restarted after a backoff of its own
(:class:`~.restarts.Backoff`): 1 s after its first failure in a row, then 2, 4, ... up to
60 s; once it has stayed up 60 s, its next failure is a first again. One flapping slot thus
costs a fork a minute and never takes the healthy slots down with it. Starts are staggered:
at most ``STARTS_PER_LOOK`` slots start at one look (every ``CHECK_INTERVAL``), at the node's
start as after ``terminate()`` killed every busy slot, so a node's cores are never shared by
dozens of Celery workers starting at once, and the slots back first serve meanwhile.

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

Leftovers. The slots' state files live in a directory of the node's
(:class:`~.state.StateDirectory`), removed when the node stops; a node that starts first
removes those of nodes on the machine that were killed (:func:`~.state.remove_leftovers`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.process import BaseProcess
from typing import Protocol

from ... import platform
from ...config import DEFAULT_STOP_TIMEOUT, Settings
from ...store.keys import pool_of
from .child import PARENT_HANDLER, NodeStop, preload, run_slot
from .recovery import SlotRecovery
from .report import NodeReport, SlotReport
from .restarts import Backoff
from .state import Running, SlotState, StateDirectory, remove_leftovers

logger = logging.getLogger("distpool")

#: How often the parent looks at its slots.
CHECK_INTERVAL = 0.2
#: How often the parent asks whether the pools of its slots' running messages have ended.
POOL_CHECK_INTERVAL = 2.0
#: How many slots the parent starts at one look, at most: when terminate() kills every busy
#: slot at once, their replacements start a few at a time (each a Celery worker's start), so
#: the slots already back serve on instead of sharing the cores with dozens of starts.
STARTS_PER_LOOK = max(2, os.cpu_count() or 1)
#: The node gives up when every slot has failed this many times in a row (see above).
GIVE_UP_FAILURES = 6


class Recovery(Protocol):
    """What becomes of the message of a slot that is gone (the broker's business)."""

    def timed_out(self, running: Running) -> None:
        """Record that the message ran out of time; called before its slot is killed."""

    def requeue(self, running: Running) -> None:
        """Put the message back on the queue, if the broker does not do so itself."""

    def release(self, holder: str) -> None:
        """Put back what the gone slot's consumer ``holder`` had taken and not yet run."""

    def pools_gone(self, pool_ids: Iterable[str]) -> set[str]:
        """Those of ``pool_ids`` that have ended (none if that cannot be known now)."""

    def disconnect(self) -> None:
        """Close its connections, to open them again when next needed."""


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
        #: What it ran when last looked at (for the node's record).
        self.running: Running | None = None
        #: The message of an ended pool that it was last seen running.
        self.orphaned: str | None = None


def run_slots(settings: Settings, concurrency: int, name: str, loglevel: str = "WARNING",
              extra_args: Sequence[str] = (), stop_timeout: float = DEFAULT_STOP_TIMEOUT,
              recovery: Recovery | None = None) -> int:
    """Run ``concurrency`` slots of the node ``name`` (Celery's ``%h`` placeholders allowed),
    each :func:`.child.run_slot` in a process of its own with the ``celery worker`` options
    ``extra_args``, until it is stopped (see Stopping above: running tasks get
    ``stop_timeout`` seconds). Returns 1 if every slot keeps failing. Logs to stderr, as the
    node, at ``loglevel``. ``recovery``: a :class:`.recovery.SlotRecovery` unless given."""
    stop = threading.Event()
    stopped_by: list[str] = []
    context = multiprocessing.get_context()
    stopping = NodeStop(context)
    level = logger.level
    handler = log_to_stderr(expand_host(name), loglevel)
    try:
        if recovery is None:
            recovery = SlotRecovery(settings)
        for path in remove_leftovers():
            logger.info("removed %s, left behind by a node that is gone", path)
        directory = StateDirectory()
        app = preload(settings, concurrency) if context.get_start_method() == "fork" else None
        slots = [_Slot(index, SlotState(os.path.join(directory.path, f"slot-{index}")))
                 for index in range(concurrency)]
        node, _, host = name.partition("@")
        report = NodeReport(settings, expand_host(f"{node}@{host or '%h'}"))
        names = [expand_host(slot_name(name, slot.index)) for slot in slots]

        def start(slot: _Slot) -> None:
            slot.state.idle()  # a replacement must not inherit its predecessor's message
            slot.running = None
            # A forked slot would keep a copy of every socket the parent has open (and with
            # it the connection, past the parent's own end): none is open at a fork.
            recovery.disconnect()
            report.disconnect()
            slot.process = context.Process(
                target=run_slot, name=f"distpool-slot-{slot.index}",
                args=(settings, slot_name(name, slot.index), loglevel, list(extra_args),
                      slot.state.path, concurrency, app, slot.index, stopping))
            slot.process.start()
            slot.backoff.started()
            logger.log(logging.WARNING if slot.replacing else logging.INFO,
                       "slot %d %s: pid %s", slot.index,
                       "replaced" if slot.replacing else "started", slot.process.pid)
            slot.replacing = False

        def stop_by(signum: int, _: object) -> None:
            stopped_by.append(signal.Signals(signum).name)
            stop.set()

        try:
            for stop_signal in platform.stop_signals():  # (a slot resets its own)
                signal.signal(stop_signal, stop_by)
            pools_asked = time.monotonic()
            while not stop.is_set():  # the first look starts the slots, a few at a time
                if not _tend_all(slots, recovery, start, time.monotonic()):
                    return 1
                report.update([slot_report(slot, celery_name)
                               for slot, celery_name in zip(slots, names)])
                if time.monotonic() - pools_asked >= POOL_CHECK_INTERVAL:
                    _end_orphans(slots, recovery)
                    pools_asked = time.monotonic()
                stop.wait(CHECK_INTERVAL)
        except KeyboardInterrupt:
            stopped_by.append("Ctrl-C")
        finally:
            if stopped_by:
                logger.warning("stopping (%s): running tasks get %g s to finish",
                               stopped_by[0], stop_timeout)
            _stop_all(slots, recovery, stopping, stop_timeout)
            for slot in slots:
                slot.state.close()
            report.close()
            directory.remove()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return 0


def slot_name(name: str, index: int) -> str:
    """The Celery node name of slot ``index`` of the node ``name``: ``<node>-<i>@<host>``."""
    node, _, host = name.partition("@")
    return f"{node}-{index}@{host or '%h'}"


def slot_report(slot: _Slot, name: str) -> SlotReport:
    """What the node's record says of ``slot``, Celery node ``name``."""
    if slot.process is None:
        return SlotReport(slot.index, name, None, "restarting")
    running = slot.running
    if running is None:
        return SlotReport(slot.index, name, slot.process.pid, "idle")
    return SlotReport(slot.index, name, slot.process.pid, "busy", running.message_id,
                      running.since)


def expand_host(name: str) -> str:
    """A node name with Celery's host placeholders filled in, for the parent's log lines
    (each slot's Celery fills in its own name)."""
    host = socket.gethostname()
    short, _, domain = host.partition(".")
    return name.replace("%h", host).replace("%n", short).replace("%d", domain)


def _tend_all(slots: Sequence[_Slot], recovery: Recovery, start: Callable[[_Slot], None],
              now: float, starts: int = STARTS_PER_LOOK) -> bool:
    """One look at every slot: tend the live ones, then start at most ``starts`` of those
    due (the others at the next look). Tending all first puts back every dead slot's
    messages on one connection, which the starts then close once, before their forks."""
    for slot in slots:
        if slot.process is None:
            continue
        delay = _tend(slot, recovery)
        if delay is not None:
            slot.process = None
            slot.restart_at = now + delay
    for slot in [slot for slot in slots if slot.process is None and slot.restart_at <= now]:
        if starts <= 0:
            break
        start(slot)
        starts -= 1
    if all(slot.backoff.failing(GIVE_UP_FAILURES) for slot in slots):
        logger.error("giving up: every slot has failed %d times in a row, none stayed up "
                     "%g s since; this node serves nothing, so it stops (exit status 1)",
                     GIVE_UP_FAILURES, slots[0].backoff.stable_after)
        return False
    return True


def _tend(slot: _Slot, recovery: Recovery) -> float | None:
    """Kill the slot if its message ran out of time; put the message of a slot that is gone
    back on the queue. None while the slot lives on, else the seconds to wait before its
    replacement starts."""
    process = slot.process
    assert process is not None
    alive = process.is_alive()
    running = slot.state.read()  # read after is_alive: a dead slot's state is final
    if alive:
        slot.running = running
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
    if process.exitcode == 0:  # it retired: maxtasksperchild, --max-tasks-per-child
        logger.info("slot %d (pid %s) ended itself", slot.index, process.pid)
        slot.backoff.ended()
        return 0.0
    delay = slot.backoff.failed()
    logger.warning("slot %d (pid %s) died while idle (%s), %d time(s) in a row; restarting "
                   "it in %g s", slot.index, process.pid, how, slot.backoff.failures, delay)
    slot.replacing = True
    return delay


def _end_orphans(slots: Sequence[_Slot], recovery: Recovery) -> None:
    """Kill each slot seen at two looks in a row running the same message of a pool that
    has ended; the next look puts the message back (where it is skipped) and replaces the
    slot. At the first look the slot's own watchdog may still stop it, more gently."""
    busy = [(slot, slot.running) for slot in slots
            if slot.process is not None and slot.running is not None]
    gone = recovery.pools_gone({pool_of(running.message_id) for _, running in busy}) \
        if busy else set()
    for slot, running in busy:
        if pool_of(running.message_id) not in gone:
            slot.orphaned = None
        elif slot.orphaned != running.message_id:
            slot.orphaned = running.message_id
        else:
            assert slot.process is not None
            logger.warning("slot %d (pid %s): message %s is of a pool that has ended, and the "
                           "slot did not stop it; killing the slot", slot.index,
                           slot.process.pid, running.message_id)
            slot.process.kill()


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


def _stop_all(slots: Sequence[_Slot], recovery: Recovery, stopping: NodeStop,
              timeout: float) -> None:
    """Stop the slots warmly (see Stopping above): each finishes its running task and
    exits; one still running after ``timeout`` seconds, or at a second Ctrl-C, is killed and
    its messages put back on the queue."""
    stopping.set()
    started = [slot for slot in slots if slot.process is not None and slot.process.pid]
    deadline = time.monotonic() + timeout
    try:
        for slot in started:
            assert slot.process is not None
            platform.joined(slot.process, max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        logger.warning("stopping now: running tasks are killed and put back on the queue")
    for slot in started:
        process = slot.process
        assert process is not None
        if not process.is_alive():
            continue
        running = slot.state.read()
        logger.warning("slot %d (pid %s) still running message %s; killing it, putting the "
                       "message back on the queue", slot.index, process.pid,
                       running.message_id if running else "(none)")
        process.kill()
        process.join()
        _release(slot, recovery)
        if running is not None:
            recovery.requeue(running)


def log_to_stderr(node: str, loglevel: str) -> logging.Handler:
    """Log the parent's life to stderr at ``loglevel``, in lines that name ``node``; returns
    the handler, named so that a forked slot drops it (:func:`.child.drop_parent_logging`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(PARENT_HANDLER)
    node = node.replace("%", "%%")  # a literal in the format
    handler.setFormatter(logging.Formatter(f"[%(asctime)s: %(levelname)s/{node}] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(loglevel.upper())
    return handler
