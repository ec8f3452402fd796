"""What runs in a slot (a Celery worker of one slot, see :mod:`.parent`).

:func:`run_slot` is the target of the process the parent starts for each slot, forked or
spawned (a fresh interpreter, on Windows and macOS: its arguments are pickled, the settings
included). It cuts what a forked slot inherits of its parent, starts the watch that shuts
the slot down warmly when the node stops or its parent dies, and runs the worker's Celery app
(:mod:`distpool.worker.app`) configured for a slot: its pool (:class:`SlotPool`), the
state file through which it tells the parent what it runs (:mod:`.state`), and on a Redis
broker without events, its own consumer (:mod:`.intake`).

Retiring. A slot ends itself once a pool's ``maxtasksperchild`` has run out in its process
(:func:`distpool.worker.execute.spent`), or after the node's ``--max-tasks-per-child``
messages, and its parent forks a fresh one at once: as multiprocessing replaces a worker
process, and with it what the tasks left in the old one (C extensions' state, leaked memory,
licence handles). The order loses and repeats nothing: the message's results are pushed and
its claim marked done in the task; Celery's warm shutdown is asked for before the message is
acknowledged, so that the consumer stops before it asks for another; one it has taken all
the same goes back to the queue unrun (the task rejects it), as do those taken and not yet
recorded (the parent restores the slot's held list). A slot's own consumer (:mod:`.intake`)
simply takes no other. The slot exits with status 0, which the parent does not count as a
failure.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.context import BaseContext
from typing import Any

from celery import Celery, signals
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.utils.imports import load_extension_class_names

from ... import platform
from ...brokers import redis_poller
from ...brokers.celery_app import TASK_NAME, urls
from ...brokers.profiles import profile_for
from ...config import Settings
from .. import bundles
from ..app import asks_for_events, create_app, run_worker
from ..claims import process_holder
from ..runner import EXIT_POOL_GONE
from .intake import intake_step
from .retirement import Retirement
from .state import SlotState

logger = logging.getLogger("distpool")

#: The name of the parent's log handler (:func:`.parent.log_to_stderr`), which a forked slot
#: drops.
PARENT_HANDLER = "distpool-slots-parent"
#: How often a slot looks whether the node is stopping, or its parent gone.
STOP_CHECK_INTERVAL = 0.25
#: How long a retiring slot waits for threads its tasks left running before it ends anyway.
RETIRE_GRACE = 5.0
#: What a slot's Celery worker imports as it starts (its command line, consumer, remote
#: control, events, transports), measured: about 290 modules, prompt_toolkit's among them
#: (Celery's command line imports click-repl). The parent imports them before it forks
#: (:func:`preload`), so that the slots share them instead of each importing its own copy.
SLOT_MODULES = (
    "celery.bin.celery", "celery.apps.worker", "celery.app.amqp", "celery.app.events",
    "celery.app.log", "celery.app.routes", "celery.worker.autoscale",
    "celery.worker.components", "celery.worker.consumer",
    "celery.worker.consumer.delayed_delivery", "celery.worker.control",
    "celery.worker.heartbeat", "celery.worker.loops", "celery.worker.pidbox",
    "celery.worker.request", "celery.worker.strategy", "celery.app.control",
    "celery.app.trace", "celery.events.dispatcher", "celery.events.receiver",
    "celery.fixups.django", "celery.loaders.app", "celery.utils.debug", "billiard.pool",
    "kombu.mixins", "kombu.pidbox", "kombu.transport.redis", "kombu.transport.pyamqp",
    "distpool.brokers.redis_transport", "psutil", "encodings.idna",
)


def preload(settings: Settings, siblings: int) -> Celery:
    """Prepare, in the parent, before it forks, what every slot of a node of ``siblings``
    slots will need: import what they will (see :data:`SLOT_MODULES`), and build and finalize
    (make the tasks of) the slots' Celery app, which each forked slot starts from and gives
    its consumer id. Each slot then starts in a few milliseconds, with less CPU than building
    its own app takes, and shares those pages."""
    for module in SLOT_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional one (a transport's client library): slots skip it too
            pass
    # Celery looks its result backend up among the installed packages' entry points (it
    # reads every package's metadata), and caches what it found: once, here, for every slot.
    load_extension_class_names("celery.result_backends")
    app = create_app(settings, sweepers=siblings)
    app.finalize(auto=True)
    # What exists now stays out of the slots' garbage collections, which would otherwise
    # write to (and so copy) every page holding an object the parent made.
    gc.freeze()
    return app


class NodeStop:
    """The node's stop, which its parent sets and each slot looks at
    (:func:`_stop_with_node`): a byte of shared memory, no lock. A ``multiprocessing.Event``
    would hang its ``set()`` for ever once a process that waited on it had ended
    (python/cpython#75158): after any slot died, the node could not stop."""

    def __init__(self, context: BaseContext) -> None:
        self._flag = context.RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)


def run_slot(settings: Settings, name: str, loglevel: str, extra_args: Sequence[str],
             state_path: str, siblings: int, app: Celery | None, index: int,
             stopping: NodeStop) -> None:
    """Run the Celery worker of one slot, node ``name``, reporting what it runs in the file
    ``state_path``, until it stops; then exit with its status. ``extra_args``: ``celery
    worker`` options; ``siblings``: the node's slots, this one included, which take turns
    at the broker's chores, this one's turn being its ``index``; ``app``: the one
    :func:`preload` made, which a forked slot inherits (a spawned one makes its own);
    ``stopping``: the node's event, set when it stops."""
    # A forked slot inherits the parent's stop handlers until Celery installs its own, and
    # its log handler, which would log each of the slot's records a second time. Ctrl-Break
    # reaches every process of a Windows console, a slot still starting too, which it would
    # end: the node's stop reaches the slot through ``stopping`` instead.
    for stop_signal in platform.stop_signals():
        signal.signal(stop_signal,
                      signal.SIG_DFL if stop_signal == signal.SIGTERM else signal.SIG_IGN)
    drop_parent_logging()
    threading.Thread(target=_stop_with_node, args=(stopping,), name="distpool-parent-watch",
                     daemon=True).start()
    inherited = len(sys.modules)

    @signals.worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def report_imports(sender: Any, **_: Any) -> None:
        bundles.record_baseline()  # what every fresh slot imports: no task's to replace
        # What preload() missed costs every slot its own copy: visible, so it is noticed.
        logger.info("slot %s ready, having imported %d modules of its own", sender.hostname,
                    len(sys.modules) - inherited)

    holder = process_holder()
    if app is None:
        app = create_app(settings, holder, sweepers=siblings)
    # Read when its broker connection is made, in this process.
    app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                         "distpool_holder": holder,
                                         "distpool_sweep_turn": index}
    state = SlotState(state_path, holder)
    configure_slot(app, state)
    broker_url = urls(settings)[0]
    if profile_for(broker_url).slots_take_messages and not asks_for_events(extra_args):
        # Celery's consumer serves remote control and consumes no queue (see .intake).
        app.steps["consumer"].add(intake_step(settings, broker_url, state, holder))
        extra_args = [*extra_args, f"--exclude-queues={settings.queue}"]
    status = run_worker(settings, concurrency=1, name=name, loglevel=loglevel,
                        extra_args=extra_args, app=app, banner=False)
    if app.distpool_retiring:
        _end_despite_leftover_threads(status)
    sys.exit(status)


def configure_slot(app: Celery, state: SlotState) -> None:
    """Make ``app`` a slot's: its pool, and its reports to the parent through ``state``."""
    app.conf.worker_pool = "distpool.worker.slots.child:SlotPool"
    app.distpool_raises_soft_limit = True  # a thread cannot be interrupted by the pool
    app.distpool_replaces_processes = True  # the parent starts another when one ends
    report_to_parent(state)


def drop_parent_logging() -> None:
    """Remove the parent's handler, which a forked slot inherits; the slot's Celery
    configures its own logging."""
    for handler in list(logger.handlers):
        if handler.get_name() == PARENT_HANDLER:
            logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)  # the slot's Celery sets the level, on the root logger


def _end_despite_leftover_threads(status: int) -> None:
    """End a retiring slot even if its tasks left threads running, once they have had
    :data:`RETIRE_GRACE` seconds to finish. The interpreter's exit would wait for them for
    ever (as a multiprocessing worker's does), and the slot, which no longer consumes, would
    never be replaced. Returns if none is left: the slot then exits as usual."""
    deadline = time.monotonic() + RETIRE_GRACE
    for thread in _leftover_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    left = _leftover_threads()
    if not left:
        return
    logger.warning("slot retiring with threads of its tasks still running, ended without "
                   "them: %s", ", ".join(thread.name for thread in left))
    logging.shutdown()  # flushes the handlers, which os._exit would not
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # none without a console (pythonw, a Windows service)
            stream.flush()
    os._exit(status)


def _leftover_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if not thread.daemon and thread is not threading.current_thread()]


def _stop_with_node(stopping: NodeStop) -> None:
    """Shut the slot down warmly (its running task finishes) once the node stops (its parent
    sets ``stopping``), or once its parent is gone, killed outright, say: unsupervised, a
    slot that died would not be replaced, nor would its message be put back or its time
    limit enforced. The warm shutdown is Celery's, for SIGTERM, raised in this process:
    which works alike on Windows, where no other process could send it."""
    parent_gone = platform.parent_watch()
    while not stopping.is_set():
        time.sleep(STOP_CHECK_INTERVAL)
        if parent_gone():
            logger.warning("the parent of this slot is gone; shutting down")
            break
    else:
        logger.info("the node is stopping; shutting down when the running task ends")
    signal.raise_signal(signal.SIGTERM)
    # Raised in this thread, the signal's handler runs in the main thread once that thread
    # runs Python again: its blocking poll (synloop's) must end first.
    redis_poller.stop_all()


class SlotPool(ThreadTaskPool):  # type: ignore[misc]
    """A slot's pool: Celery's threads pool, run with one thread.

    The task runs in that thread, so the worker's event loop stays free to answer remote
    control (inspect, ping, revoke) and send heartbeats while it runs. Celery cannot stop a
    thread, so terminating the running task (a revoke with ``terminate=True``, which
    ``Pool.terminate()`` sends) ends the slot's process. Its parent replaces it and puts the
    message back, where it is skipped: its pool is gone.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # --max-tasks-per-child: prefork recycles a pool process, a slot its own process.
        self._retirement = Retirement(self.app, self.options.get("maxtasksperchild"))

    def on_apply(self, target: Any, args: Any = None, kwargs: Any = None,
                 callback: Any = None, accept_callback: Any = None, **options: Any) -> Any:
        def finished(result: Any) -> None:
            # Before the acknowledgement, which lets the consumer take another message: one
            # it takes all the same goes back (see the task).
            self._retirement.message_done()
            if callback is not None:
                callback(result)  # acknowledges the message

        return super().on_apply(target, args, kwargs, finished, accept_callback, **options)

    def terminate_job(self, pid: int, signal: Any = None) -> None:
        logger.warning("terminating the running task: ending this worker process")
        os._exit(EXIT_POOL_GONE)


def report_to_parent(state: SlotState) -> None:
    """Keep a slot's state file saying which message it runs, and when that message must be
    killed (its hard time limit), for the parent in :mod:`.parent`."""

    def received(request: Any, **_: Any) -> None:
        if request.type != TASK_NAME:  # (its name is the user's function's: the shadow)
            return
        hard_limit, _soft = request.time_limits
        state.running(request.id, request.message.delivery_tag,
                      None if not hard_limit else time.time() + hard_limit)

    def done(**_: Any) -> None:
        state.idle()

    state.idle()  # names the holder: the parent restores its held list if it dies
    # A slot reserves one message at a time and its one thread starts it at once:
    # "received" is "running".
    signals.task_received.connect(received, weak=False)
    signals.task_postrun.connect(done, weak=False)
    signals.task_revoked.connect(done, weak=False)
