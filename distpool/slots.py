"""The default process model of ``distpool worker``: one worker process per slot.

``distpool worker --concurrency N`` runs N Celery workers of one slot each under one parent.
A slot's task runs in a thread of the worker process that took its message (Celery's
``threads`` pool, one thread). That saves the hand-off to a pool process and back, which in
Celery's prefork pool idles each process about 5 ms between two tasks; the worker's event
loop stays free to answer remote control and send heartbeats while the task runs; and it
works on Windows, where prefork is not supported.

What prefork's main process does for its pool processes, the parent does for the slots. It
reads what each slot runs from the slot's state file (:mod:`distpool.slot_state`), and:

* replaces a slot that exits;
* puts the message a dead slot held back on the queue at once (``recovery.requeue``); the
  worker that receives it counts the attempt, so a task that keeps killing its process
  fails after a bounded number of attempts instead of returning forever;
* kills a slot whose message runs past its hard time limit, having first marked the message
  (``recovery.timed_out``), so that its tasks fail with ``TaskTimeoutError``.

Slots are started with multiprocessing's default start method: forked on Linux, from a
process that has already imported Celery, so a slot starts in milliseconds; a fresh
interpreter on Windows and macOS.
"""

from __future__ import annotations

import enum
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

from .restarts import RestartBudget
from .slot_state import Running, SlotState

logger = logging.getLogger("distpool")

#: How long the slots get to finish their running tasks when the parent is stopped.
STOP_TIMEOUT = 30.0
#: How often the parent looks at its slots.
CHECK_INTERVAL = 0.2
#: How often a slot looks for its parent (where it cannot wait on it).
PARENT_CHECK_INTERVAL = 1.0

class Recovery(Protocol):
    """What becomes of the message of a slot that is gone (the broker's business)."""

    def timed_out(self, running: Running) -> None:
        """Record that the message ran out of time; called before its slot is killed."""

    def requeue(self, running: Running) -> None:
        """Put the message back on the queue, if the broker does not do so itself."""


class _Slot:
    def __init__(self, index: int, state: SlotState, process: BaseProcess) -> None:
        self.index = index
        self.state = state
        self.process = process
        self.budget = RestartBudget()  # for exits of its own, not deaths caused by a task


def run_slots(target: Callable[[list[str]], int], argv_for: Callable[[int, str], list[str]],
              concurrency: int, recovery: Recovery) -> int:
    """Run ``concurrency`` slots, each ``target(argv_for(index, state_path))`` in a process of
    its own, until SIGTERM or Ctrl-C. Returns 1 if a slot keeps exiting while idle."""
    stop = threading.Event()
    context = multiprocessing.get_context()
    with tempfile.TemporaryDirectory(prefix="distpool-slots-") as directory:

        def start(index: int, state: SlotState) -> BaseProcess:
            state.idle()  # a replacement must not inherit its predecessor's message
            process = context.Process(target=_slot_main, name=f"distpool-slot-{index}",
                                      args=(target, argv_for(index, state.path)))
            process.start()
            return process

        slots = []
        for index in range(concurrency):
            state = SlotState(os.path.join(directory, f"slot-{index}"))
            slots.append(_Slot(index, state, start(index, state)))
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(CHECK_INTERVAL):
                for slot in slots:
                    outcome = _tend(slot, recovery)
                    if outcome is _Outcome.GIVE_UP:
                        return 1
                    if outcome is _Outcome.REPLACE:
                        slot.process = start(slot.index, slot.state)
        except KeyboardInterrupt:
            pass
        finally:
            _stop_all([slot.process for slot in slots])
    return 0


def _slot_main(target: Callable[[list[str]], int], argv: list[str]) -> None:
    # A forked slot inherits the parent's SIGTERM handler until Celery installs its own.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
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


class _Outcome(enum.Enum):
    KEEP = "keep"
    REPLACE = "replace"
    GIVE_UP = "give up"


def _tend(slot: _Slot, recovery: Recovery) -> _Outcome:
    """Kill the slot if its message ran out of time; put the message of a slot that is gone
    back on the queue; say whether to replace the slot."""
    alive = slot.process.is_alive()
    running = slot.state.read()  # read after is_alive: a dead slot's state is final
    if alive:
        if running is None or running.kill_at is None or time.time() < running.kill_at:
            return _Outcome.KEEP
        logger.warning("slot %d: message %s ran past its time limit; killing the slot",
                       slot.index, running.message_id)
        recovery.timed_out(running)
        slot.process.kill()
        slot.process.join()
        recovery.requeue(running)
        return _Outcome.REPLACE
    if running is not None:
        # Killed by its task, whose attempts are bounded: not held against the slot.
        logger.warning("slot %d died (exit code %s) running message %s; putting it back",
                       slot.index, slot.process.exitcode, running.message_id)
        recovery.requeue(running)
        return _Outcome.REPLACE
    if slot.process.exitcode == 0:  # it chose to end: --max-tasks-per-child
        return _Outcome.REPLACE
    if not slot.budget.allow():
        logger.error("slot %d keeps exiting (code %s); stopping", slot.index,
                     slot.process.exitcode)
        return _Outcome.GIVE_UP
    logger.warning("slot %d exited with code %s; restarting it", slot.index,
                   slot.process.exitcode)
    return _Outcome.REPLACE


def _stop_all(processes: Sequence[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM, Celery's warm shutdown (on Windows, a kill)
    for process in processes:
        process.join(STOP_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
