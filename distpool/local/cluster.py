"""LocalCluster: a private Redis server and local workers, so ``Pool()`` works out of the box.

The cluster runs under a small supervisor process (:mod:`distpool.local.supervisor`) that starts
a Redis server (``redis-server`` 6.2 or newer, or Memurai on Windows: see
:mod:`.redis_server`) on a free loopback port with a temporary directory of its own, then
``distpool worker`` for it: the same worker as on a real cluster. Without a Redis server to
run, :meth:`LocalCluster.start` fails at once, saying what to install or use instead.

The parent holds the write end of a pipe that is the supervisor's stdin. However the parent
ends (``close()``, garbage collection, interpreter exit, or SIGKILL), the kernel closes that
pipe; the supervisor sees end-of-file and stops the workers (the node and every process it
started) and Redis and removes the directory. The supervisor's own children are started
with a parent-death signal (Linux), so they go too if the supervisor itself is killed.
"""

from __future__ import annotations

import os
import queue
import secrets
import subprocess
import sys
import threading
from typing import Any

from .. import platform
from ..config import DEFAULT_QUEUE
from ..errors import DistpoolError

#: Longest wait for the supervisor to report its Redis server ready.
START_TIMEOUT = 30.0
#: Longest wait for the supervisor to stop everything before it is killed.
STOP_TIMEOUT = 15.0
#: The supervisor's first line of output starts with one of these.
READY = "ready "
FAILED = "failed "
#: The supervisor's exit code when it gave up on a worker that keeps exiting.
EXIT_GAVE_UP = 3


class LocalClusterError(DistpoolError):
    """The local cluster could not be started."""


class LocalCluster:
    """A Redis server and ``workers`` worker processes on this machine, private to it.

    Use as a context manager, or :meth:`start` and :meth:`stop`. Several pools can share it
    through :attr:`broker_url` and :attr:`secret`; ``distpool worker --broker URL`` started
    by hand, with ``DISTPOOL_SECRET`` set to the secret, attaches more workers to it.
    """

    def __init__(self, workers: int | None = None, queue: str = DEFAULT_QUEUE) -> None:
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers or os.cpu_count() or 1
        self.queue = queue
        #: The key that pools of this cluster must sign with: ``Pool(secret=cluster.secret)``.
        self.secret = secrets.token_hex(32)
        self._broker_url: str | None = None
        self._supervisor: subprocess.Popen[bytes] | None = None

    @property
    def broker_url(self) -> str:
        """The cluster's Redis URL: its broker and its result store."""
        if self._broker_url is None:
            raise LocalClusterError("the local cluster is not running")
        return self._broker_url

    def start(self) -> LocalCluster:
        if self._supervisor is not None:
            return self
        from .redis_server import find_redis_server, no_server_advice

        redis_server = find_redis_server()
        if redis_server is None:  # said at once, not after an interpreter's start
            raise LocalClusterError(f"could not start the local cluster: {no_server_advice()}")
        command = [sys.executable, "-m", "distpool.local.supervisor",
                   "--workers", str(self.workers), "--queue", self.queue,
                   "--redis-server", redis_server]
        # Like multiprocessing's processes, the workers get this process's import path and
        # working directory (inherited), so they import what the client can.
        path = os.pathsep.join(entry or os.getcwd() for entry in sys.path)
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith("DISTPOOL_")}
        environment.update(PYTHONPATH=path, DISTPOOL_SECRET=self.secret)
        self._supervisor = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environment,
            # Its own session (process group, on Windows): Ctrl-C in the user's terminal
            # reaches the client, which then stops the cluster in order, rather than every
            # worker at once.
            **platform.new_process_group())
        assert self._supervisor.stdin is not None
        # Its end is the supervisor's signal to stop: a forked child must not hold it open.
        platform.closed_in_forked_children(self._supervisor.stdin)
        line = _first_line(self._supervisor, START_TIMEOUT)
        if not line.startswith(READY):
            self.stop()
            detail = line[len(FAILED):] if line.startswith(FAILED) else (
                line or "it exited or did not answer in time")
            raise LocalClusterError(f"could not start the local cluster: {detail}")
        self._broker_url = line[len(READY):]
        return self

    def failure(self) -> str | None:
        """Why the cluster stopped on its own (its worker kept exiting, and the supervisor
        gave up, stopping Redis too); None while it runs, and before it starts."""
        supervisor = self._supervisor
        if supervisor is None or supervisor.poll() is None:
            return None
        if supervisor.returncode == EXIT_GAVE_UP:
            return ("the local cluster stopped: its worker kept exiting (the supervisor wrote "
                    "the end of the worker's log to standard error)")
        return f"the local cluster stopped: its supervisor exited with code {supervisor.returncode}"

    def stop(self) -> None:
        """Stop the workers and Redis, and remove their files; waits until they are gone."""
        supervisor, self._supervisor, self._broker_url = self._supervisor, None, None
        if supervisor is None:
            return
        assert supervisor.stdin is not None and supervisor.stdout is not None
        try:
            supervisor.stdin.close()  # end-of-file: the supervisor's signal to stop
        except OSError:
            pass
        try:
            supervisor.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait()
        supervisor.stdout.close()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LocalCluster workers={self.workers} broker_url={self._broker_url}>"


def _first_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The process's first line of output, or '' if none comes in time."""
    lines: queue.Queue[bytes] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=timeout).decode(errors="replace").strip()
    except queue.Empty:
        return ""
