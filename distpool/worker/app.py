"""The Celery app that ``distpool worker`` runs: the shared app (:mod:`distpool.brokers.
celery_app`), with distpool's one task, its failure reporting and its bootsteps; and
:func:`run_worker`, which runs it in this process.

Which processes run it is the process model's business (:mod:`distpool.worker.node`): a
slot (:mod:`.slots.child`) configures the app for itself before running it.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from typing import Any

from celery import Celery, signals
from celery.apps.worker import install_worker_term_handler
from celery.exceptions import Reject
from celery.worker.request import Request

from .. import platform
from ..brokers import redis_poller
from ..brokers.celery_app import (
    TASK_NAME,
    flags_redeliveries,
    hold_renewal_interval,
    new_app,
    renews_holds,
    urls,
)
from ..config import Settings
from ..errors import ModuleConflictError
from ..store.keys import pool_of
from ..wire.signing import Signer
from . import execute
from .claims import process_holder
from .runner import MAX_ATTEMPTS, ProcessLocalRunner
from .steps import hold_renewal_step, registration_step

logger = logging.getLogger("distpool")


class DescribedRequest(Request):  # type: ignore[misc]
    """A distpool message as ``celery inspect active`` shows it: its description (the
    ``argsrepr`` the client wrote: pool, tasks, size) in place of its arguments, which are
    signed envelopes, long and of no use to a person."""

    def info(self, safe: bool = False) -> dict[str, Any]:
        return super().info(safe=True)  # type: ignore[no-any-return]


def create_app(settings: Settings, holder: str | None = None, sweepers: int = 1) -> Celery:
    """The worker's app. ``holder``: its consumer id on a Redis broker (see
    :mod:`distpool.brokers.held_messages`); ``sweepers``: how many consumers (a node's slots)
    take turns sweeping lapsed holds (see :func:`~distpool.brokers.celery_app.
    transport_options`)."""
    broker_url, result_url = urls(settings)
    app = new_app(settings, holder, sweepers)
    app.conf.update(
        # Stores nothing but failures Celery records itself; see FailureReporter.
        result_backend="distpool.worker.failures:FailureReporter",
        task_store_errors_even_if_ignored=True,
    )
    runner = ProcessLocalRunner(result_url, Signer(settings.secret),
                                claim_ttl=settings.worker_lost_timeout,
                                flags_redeliveries=flags_redeliveries(broker_url))
    app.distpool_runner = runner  # for FailureReporter; kept out of app.conf, which inspect shows
    # Replies to remote control (inspect, ping) go out on the remote-control channel itself,
    # as kombu does without a producer pool: Celery's pool would open a broker connection
    # (two Redis connections) per worker process for them, and keep it.
    app.control.mailbox._producer_pool = None
    app.distpool_retiring = False  # set by a SlotPool that has run its last task
    # Whether the task raises its soft time limit itself: prefork raises it in its pool
    # processes, a slot's threads pool cannot, so a slot sets this (slots.child).
    app.distpool_raises_soft_limit = False
    # Whether a process that ends is replaced by a fresh one (a slot's is), so that a task it
    # cannot run for another version of the user's module already imported can be put back.
    app.distpool_replaces_processes = False
    # Whether the pool stops a task at its time limit; Celery's threads pool cannot (set by
    # .node), and the pools that set a task_timeout are told, once each, in the log.
    app.distpool_enforces_time_limits = True
    unenforced_pools: set[str] = set()

    def run_message(messages: Sequence[Any], message_id: str, timelimit: Any,
                    delivery_info: Any) -> bool:
        """Run one message's tasks and push their results: the body of distpool's task,
        given what it reads of its request (Celery's ``timelimit`` header and the delivery
        info). False if the message must go back on the queue unrun instead: its tasks need
        a version of the user's module other than this process's, and a fresh process
        will take this one's place (as after maxtasksperchild)."""
        hard_limit, soft_limit = timelimit or (None, None)
        if (hard_limit or soft_limit) and not app.distpool_enforces_time_limits:
            _warn_unenforced(unenforced_pools, pool_of(message_id))
        try:
            runner.get().run(messages, message_id,
                             redelivered=bool((delivery_info or {}).get("redelivered")),
                             raise_soft_limit_after=(soft_limit if app.distpool_raises_soft_limit
                                                     else None))
        except ModuleConflictError as conflict:
            if not (conflict.replaceable and app.distpool_replaces_processes):
                runner.get().report_failure(messages, message_id, conflict)
                return True
            logger.warning("message %s goes back to the queue: %s", message_id, conflict)
            execute.retire()
            return False
        return True

    app.distpool_run_message = run_message  # for a slot's own consumer (slots.intake)

    # shared=False: a shared task (Celery's default) is also registered in every app created
    # after it, so a second pool's app would keep the first app's task and warn.
    @app.task(name=TASK_NAME, bind=True, ignore_result=True,  # type: ignore[untyped-decorator]
              shared=False, retry_on_worker_lost=True, max_retries=MAX_ATTEMPTS - 1,
              default_retry_delay=0, Request=DescribedRequest)
    def run_distpool_tasks(task: Any, *messages: Any) -> None:
        if app.distpool_retiring:  # a slot past --max-tasks-per-child, shutting down
            raise Reject("this slot is being replaced", requeue=True)
        request = task.request
        if not run_message(messages, request.id, request.timelimit, request.delivery_info):
            raise Reject("a fresh process takes this one's place", requeue=True)

    app.steps["consumer"].add(registration_step(settings))
    if renews_holds(broker_url):
        app.steps["worker"].add(hold_renewal_step(hold_renewal_interval(settings)))
    return app


def _warn_unenforced(warned: set[str], pool_id: str) -> None:
    if pool_id in warned:
        return
    warned.add(pool_id)
    logger.warning("pool %s sets a task_timeout, which this worker cannot enforce: Celery's "
                   "threads pool cannot stop a thread (celery/celery#9203); its tasks run to "
                   "their end. Run the worker without --pool threads to enforce it", pool_id)


def stop_on_every_stop_signal(sender: Any, **_: Any) -> None:
    """Celery's worker shuts down warmly on SIGTERM. On Windows, Ctrl-Break and a service
    manager's console stop send SIGBREAK, whose default ends the process at once: the same
    warm shutdown is installed for it (for every signal :func:`distpool.platform.
    stop_signals` names)."""
    for stop_signal in platform.stop_signals():
        if stop_signal != signal.SIGTERM:
            install_worker_term_handler(sender.controller, sig=stop_signal.name)


def wake_consumers(**_: Any) -> None:
    """A warm shutdown began (in the main thread's signal handler): the blocking loop a worker
    runs without an event loop (Celery's synloop, Windows') sees it once its poll returns,
    which a signal does not make it do (Python polls again): wake it now."""
    redis_poller.stop_all()


#: ``celery worker`` options that ask for events (Flower, ``celery events``), which want the
#: worker's heartbeats too.
EVENT_OPTIONS = ("-E", "--task-events", "--events", "--heartbeat-interval")


def asks_for_events(extra_args: Sequence[str]) -> bool:
    """Whether the ``celery worker`` options ``extra_args`` ask for events."""
    return any(arg == option or arg.startswith(option + "=")
               for arg in extra_args for option in EVENT_OPTIONS)


def run_worker(settings: Settings, concurrency: int, name: str, loglevel: str,
               extra_args: Sequence[str] = (), app: Celery | None = None,
               banner: bool = True) -> int:
    """Run ``celery worker`` for distpool in this process until it is stopped: ``app``, else
    one made here. ``extra_args`` are ``celery worker`` options (``--pool``, ``-E``, ...).
    ``banner``: print Celery's start-up banner (a slot does not: a node of 64 slots would
    print 64, and composing one is much of a slot's start-up CPU)."""
    if app is None:
        app = create_app(settings, process_holder())
    signals.worker_ready.connect(stop_on_every_stop_signal, weak=False,
                                 dispatch_uid="distpool-stop-signals")
    signals.worker_shutting_down.connect(wake_consumers, weak=False,
                                         dispatch_uid="distpool-wake-consumers")
    wants_events = asks_for_events(extra_args)
    argv = [
        "worker",
        f"--queues={settings.queue}",
        f"--concurrency={concurrency}",
        f"--hostname={name}",
        f"--loglevel={loglevel}",
        # Gossip and mingle are for features distpool does not use, and they slow the start.
        # Remote control (inspect, revoke) and events (-E, Flower) still work.
        "--without-gossip",
        "--without-mingle",
        # Heartbeats are events, for monitors; nobody listens unless events were asked for,
        # and they were much of an idle slot's traffic to the broker.
        *([] if wants_events else ["--without-heartbeat"]),
        *extra_args,
    ]
    # Celery's own command line; --quiet is one of its global options, before the command.
    app.start(argv=argv if banner else ["--quiet", *argv])
    return 0
