"""The local cluster's supervisor process: ``python -m distpool.local.supervisor --workers N``.

Started by :class:`distpool.cluster.LocalCluster`. It starts a Redis server (``redis-server``
or Memurai, see :mod:`.redis_server`) on a free loopback port in a temporary directory,
checks that it is Redis 6.2 or newer, prints ``ready <url>``, starts ``distpool worker`` for
that Redis, and runs until its stdin reaches end-of-file: the parent closed it, or the
parent died. Then it stops the workers and Redis and removes the directory.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

from .. import platform
from ..errors import UnsupportedRedisError
from ..redis_client import version
from ..redis_client.connection import Connection
from ..retry import RetryPolicy
from ..worker.slots.restarts import RestartBudget
from ..worker.slots.state import remove_leftovers
from .cluster import EXIT_GAVE_UP, FAILED, READY, LocalClusterError
from .redis_server import candidates, find_redis_server, no_server_advice, too_old_advice


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class _Supervisor:
    def __init__(self, workers: int, queue: str) -> None:
        self.workers = workers
        self.queue = queue
        self.directory = tempfile.mkdtemp(prefix="distpool-cluster-")
        self.redis: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start_redis(self, executable: str | None = None) -> None:
        """Start ``executable`` (else the first Redis server found); if it is older than
        Redis 6.2, or does not start, the other servers found in turn; fail saying what
        was wrong with each."""
        first = executable or find_redis_server()
        if first is None:
            raise LocalClusterError(no_server_advice())
        others = (path for path in candidates() if path != first)  # (looked for if needed)
        problems: list[str] = []
        for candidate in itertools.chain([first], others):
            try:
                self._start_redis(candidate)
                _require_version(self.url, candidate)
                return
            except (UnsupportedRedisError, LocalClusterError) as exc:
                problems.append(str(exc))
                _kill(self.redis)
                self.redis = None
        raise LocalClusterError(too_old_advice("; ".join(problems)))

    def _start_redis(self, executable: str, attempts: int = 5) -> None:
        for _ in range(attempts):  # a free port can be taken before Redis binds it
            self.port = free_port()
            self.redis = subprocess.Popen(
                [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.directory, "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, preexec_fn=platform.dies_with_parent())
            deadline = time.monotonic() + 10
            while self.redis.poll() is None and time.monotonic() < deadline:
                if _redis_answers(self.port):
                    return
                time.sleep(0.005)
            _kill(self.redis)
        raise LocalClusterError(f"the Redis server {executable} did not start")

    def start_worker(self) -> None:
        # The worker's output goes to a file: Celery's banner and warnings are not the
        # user's business unless the worker fails, and then the file is reported.
        with open(self.log_path, "ab") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "distpool", "worker", "--broker", self.url,
                 "--queue", self.queue,
                 "--concurrency", str(self.workers), "--name", f"local-{os.getpid()}@%h"],
                stdout=log, stderr=subprocess.STDOUT,
                # A process group of its own, so that stopping it stops its slots (the
                # whole tree, on Windows).
                preexec_fn=platform.dies_with_parent(), **platform.new_process_group())

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "worker.log")

    def worker_log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def run_until_parent_leaves(self) -> bool:
        """Keep the worker running until the parent leaves (True), or until it keeps exiting
        (False)."""
        parent_left = threading.Event()

        def wait_for_end_of_file() -> None:
            # os.read, not sys.stdin: a daemon thread blocked in a buffered read when the
            # interpreter exits (after giving up) aborts it, with a fatal error.
            while os.read(sys.stdin.fileno(), 4096):
                pass
            parent_left.set()

        threading.Thread(target=wait_for_end_of_file, daemon=True).start()
        restarts = RestartBudget()
        while not parent_left.wait(0.5):
            if self.worker is not None and self.worker.poll() is not None:
                # A worker that dies is replaced, but not in a tight loop.
                if not restarts.allow():
                    sys.stderr.write("distpool: the local worker keeps exiting; its log:\n"
                                     + self.worker_log_tail())
                    return False
                self.start_worker()
        return True

    def stop(self) -> None:
        # Nothing in a private cluster outlives it, so there is nothing to shut down gently:
        # the clients' pools are finished or terminated by the time it stops.
        _kill(self.worker, group=True)
        _kill(self.redis)
        shutil.rmtree(self.directory, ignore_errors=True)
        # The killed node could not remove its slots' state directory (in the system's
        # temporary directory, where its slots' own temporary files go too).
        remove_leftovers()


def _require_version(url: str, executable: str) -> None:
    """Raise :class:`~distpool.errors.UnsupportedRedisError`, naming ``executable`` and its
    version, if the server it runs at ``url`` is older than Redis 6.2."""
    connection = Connection(url, timeout=5.0, retry=RetryPolicy(retries=2))
    try:
        found = version.redis_version(connection)
    except OSError as exc:
        raise LocalClusterError(f"the Redis server {executable} does not answer: {exc}") \
            from None
    finally:
        connection.close()
    if version.too_old(found):
        raise UnsupportedRedisError(f"the Redis server {executable} is version {found}")


def _kill(process: subprocess.Popen[bytes] | None, group: bool = False) -> None:
    """Kill ``process`` at once (with ``group``, every process it started too, and wait
    until they have ended, for up to a second: the slots' files are closed by then)."""
    if process is None:
        return
    if process.poll() is None:  # (not yet reaped: its pid is not another's)
        if group:
            platform.end_process_tree(process.pid, timeout=1.0)
        else:
            try:
                process.kill()
            except ProcessLookupError:
                pass
    process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distpool.local.supervisor")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--redis-server", metavar="PATH",
                        help="the Redis server to run (default: the first found; others "
                             "found are tried if it is older than Redis 6.2)")
    args = parser.parse_args(argv)
    supervisor = _Supervisor(args.workers, args.queue)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        supervisor.start_redis(args.redis_server)
        print(READY + supervisor.url, flush=True)
        supervisor.start_worker()
        if not supervisor.run_until_parent_leaves():
            return EXIT_GAVE_UP
    except LocalClusterError as exc:
        print(FAILED + str(exc), flush=True)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
