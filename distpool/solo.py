"""``distpool worker --pool solo --concurrency N``: N single-process workers under one parent.

Celery's prefork pool is not supported on Windows. There, each worker slot is a worker of its
own running Celery's ``solo`` pool, started as a fresh interpreter (no fork). This parent
starts them, restarts one that dies (at most a few times a minute), and stops them all when
it is stopped. It runs the same way on Linux, where the tests exercise it.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from .restarts import RestartBudget

logger = logging.getLogger("distpool")

#: How long the workers get to finish their running tasks when the parent is stopped.
STOP_TIMEOUT = 30.0


def run_solo_workers(worker_args: Sequence[str], concurrency: int, name: str) -> int:
    """Run ``concurrency`` copies of ``distpool worker <worker_args> --pool solo`` until
    SIGTERM or Ctrl-C; each is named ``<name>-<i>``."""
    node, _, host = name.partition("@")
    stop = threading.Event()

    def start(slot: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([
            sys.executable, "-m", "distpool", "worker", *worker_args, "--pool", "solo",
            "--concurrency", "1", "--name", f"{node}-{slot}@{host or '%h'}"])

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    children = {slot: start(slot) for slot in range(concurrency)}
    budgets = {slot: RestartBudget() for slot in children}
    try:
        while not stop.wait(0.5):
            for slot, child in list(children.items()):
                if child.poll() is None:
                    continue
                if not budgets[slot].allow():
                    logger.error("worker %d keeps exiting (code %s); stopping", slot,
                                 child.returncode)
                    return 1
                logger.warning("worker %d exited with code %s; restarting it", slot,
                               child.returncode)
                children[slot] = start(slot)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_all(list(children.values()))
    return 0


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for child in processes:
        if child.poll() is None:
            child.terminate()  # Celery's warm shutdown: running tasks finish
    for child in processes:
        try:
            child.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
