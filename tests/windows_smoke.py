"""distpool on Windows, end to end: ``python tests/windows_smoke.py``.

The ``smoke`` job of ``.github/workflows/windows.yml`` runs it on windows-latest against
Memurai on 127.0.0.1:6379 (or ``$DISTPOOL_BROKER_URL``). It starts ``distpool worker`` (2
slots, a process group of its own) and checks, a PASS/FAIL line each: Redis answers; the slots
register; a map is right; a slot killed mid-task has its task put back at once (done long
before ``--worker-lost-timeout 120``); Ctrl-Break (elsewhere Ctrl-C, SIGINT to the group)
stops the node warmly: the running task's result arrives, exit status 0, no slot killed.
Exit status 0 only if all pass. It runs on Linux too, also in the simulated-Windows mode
(``tests/windows_mode`` first on ``PYTHONPATH``). pytest collects only ``test_*.py``.
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
from pathlib import Path
from typing import Any, Callable

import psutil
import redis

from distpool import Pool, config, platform
from distpool.status import cluster_status

URL = os.environ.get("DISTPOOL_BROKER_URL", "redis://127.0.0.1:6379/0")
SLOTS = 2
WORKER_LOST_TIMEOUT = 120  # only the parent's immediate put-back can beat it
WAIT = 60.0  # for anything to happen: ample, and far short of WORKER_LOST_TIMEOUT
STOP_KEYS = "Ctrl-Break" if sys.platform == "win32" else "Ctrl-C (SIGINT to the group)"


def square(x: int) -> int:
    return x * x


def pid_after(seconds: float, pid_file: str | None = None) -> int:
    """Say which process runs this (in ``pid_file``), sleep, and return that pid."""
    if pid_file is not None:
        Path(pid_file + ".tmp").write_text(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
    time.sleep(seconds)
    return os.getpid()


def wait_for(what: str, found: Callable[[], Any], timeout: float = WAIT) -> Any:
    """``found()``'s first true value, asked every 0.1 s; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout:g} s")


def attempt(call: Callable[[], Any], *errors: type[Exception]) -> Any:
    """``call()``, or None if it raises one of ``errors``."""
    try:
        return call()
    except errors:
        return None


def pid_in(path: Path) -> int | None:
    pid: int | None = attempt(lambda: int(path.read_text()), OSError, ValueError)
    return pid  # None: not written yet


class Smoke:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.queue = f"smoke-{uuid.uuid4().hex[:8]}"
        self.secret = secrets.token_hex(16)
        self.log_path = directory / "worker.log"
        self.worker: subprocess.Popen[bytes] | None = None
        self.pool: Any = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def processes(self) -> list[int]:
        """The pids of the worker's parent and of its slots (and their helpers)."""
        assert self.worker is not None
        try:
            return [self.worker.pid, *(child.pid for child in
                                       psutil.Process(self.worker.pid).children(True))]
        except psutil.NoSuchProcess:
            return []

    def node(self) -> dict[str, Any] | None:
        """The worker's node, once it is alive with every slot registered."""
        assert self.worker is not None and self.worker.poll() is None, "the worker exited"
        settings = config.resolve_for_cluster(broker=URL, queue=self.queue)
        nodes: list[dict[str, Any]] = cluster_status(settings)["nodes"]
        for node in nodes:
            if node["alive"] and node["registered"] == SLOTS:
                return node
        return None

    def redis_answers(self) -> str:
        client = redis.Redis.from_url(URL, socket_timeout=5)
        info = wait_for("answer from Redis", lambda: attempt(lambda: client.info("server"),
                                                              redis.RedisError), timeout=30)
        return f"{URL}, Redis {info.get('redis_version', '(version not said)')}"

    def slots_registered(self) -> str:
        command = [sys.executable, "-m", "distpool", "worker", "--broker", URL,
                   "--queue", self.queue, "--concurrency", str(SLOTS), "--loglevel", "INFO",
                   "--worker-lost-timeout", str(WORKER_LOST_TIMEOUT)]
        with open(self.log_path, "wb") as log:
            self.worker = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "DISTPOOL_SECRET": self.secret},
                **platform.new_process_group())
        node = wait_for("node with 2 slots registered", self.node)
        return f"node {node['name']}, slot pids {[s['pid'] for s in node['slot_detail']]}"

    def map_works(self) -> str:
        self.pool = Pool(SLOTS, broker=URL, queue=self.queue, secret=self.secret)
        results = self.pool.map(square, range(20), chunksize=1)
        assert results == [x * x for x in range(20)], f"wrong results: {results}"
        return "map(square, range(20)) is right"

    def killed_task_put_back(self) -> str:
        pid_file = self.directory / "killed.pid"
        result = self.pool.apply_async(pid_after, (5.0, str(pid_file)))
        victim = wait_for("pid of the long task", lambda: pid_in(pid_file))
        assert victim in self.processes()[1:], f"the task ran in {victim}, not in a slot"
        psutil.Process(victim).kill()
        killed_at = time.monotonic()
        rerun = result.get(timeout=WAIT)
        took = time.monotonic() - killed_at
        assert rerun != victim, f"the result came from the killed slot {victim}"
        assert "putting the message back on the queue" in self.log(), "no put-back logged"
        assert "could not put" not in self.log(), "the put-back failed"
        # The warm stop below is to reach both slots, the replacement too, once it serves.
        serving = wait_for("replacement slot serving", lambda: self.serving(victim))
        return (f"killed {victim}; the task completed on {rerun} {took:.1f} s later; "
                f"slots {serving} serve")

    def serving(self, gone: int) -> list[int] | None:
        """The pids of two slots serving at once, if neither is ``gone``."""
        pids = set(self.pool.map(pid_after, [0.5] * SLOTS, chunksize=1))
        return sorted(pids) if len(pids) == SLOTS and gone not in pids else None

    def warm_stop(self) -> str:
        assert self.worker is not None
        pid_file = self.directory / "last.pid"
        result = self.pool.apply_async(pid_after, (4.0, str(pid_file)))
        wait_for("pid of the last task", lambda: pid_in(pid_file))
        if sys.platform == "win32":  # to its process group: the parent and its slots
            os.kill(self.worker.pid, signal.CTRL_BREAK_EVENT)
        else:
            os.killpg(self.worker.pid, signal.SIGINT)
        asked_at = time.monotonic()
        pid = result.get(timeout=WAIT)
        try:
            status = self.worker.wait(WAIT)
        except subprocess.TimeoutExpired:
            states = {left: attempt(lambda: psutil.Process(left).status(), psutil.Error)
                      for left in self.processes()}  # None: gone
            raise AssertionError(f"the worker did not exit within {WAIT:g} s; its processes: "
                                 f"{states}") from None
        assert status == 0, f"the worker exited with status {status}"
        assert "stopping (" in self.log(), "no warm stop logged"
        assert "killing it" not in self.log(), "a slot was killed at the stop"
        took = time.monotonic() - asked_at
        return f"the running task's result came from {pid}; exit status 0 after {took:.1f} s"

    def stop_everything(self) -> None:
        try:
            if self.pool is not None:
                self.pool.terminate()
        finally:
            if self.worker is not None:
                platform.end_process_tree(self.worker.pid, timeout=10)
                self.worker.wait()


def main() -> int:
    directory = Path(tempfile.mkdtemp(prefix="distpool-smoke-"))
    smoke = Smoke(directory)
    steps = [("Redis answers", smoke.redis_answers),
             ("the worker registers its 2 slots", smoke.slots_registered),
             ("Pool(2).map returns the right results", smoke.map_works),
             ("a slot killed mid-task: its task is put back and completes elsewhere",
              smoke.killed_task_put_back),
             (f"{STOP_KEYS} stops the worker warmly", smoke.warm_stop)]
    passed = 0
    try:
        for name, step in steps:
            started = time.monotonic()
            try:
                detail = step()
            except Exception as error:
                print(f"FAIL  {name}: {type(error).__name__}: {error}", flush=True)
                break
            print(f"PASS  {name} ({time.monotonic() - started:.1f} s): {detail}", flush=True)
            passed += 1
        for name, _ in steps[passed + 1:]:
            print(f"FAIL  {name}: not run, after the failure above", flush=True)
    finally:
        smoke.stop_everything()
        if passed < len(steps):
            log = smoke.log().encode("ascii", "backslashreplace").decode()  # any console
            print(f"---- worker log ({smoke.log_path}) ----\n{log}---- end of log ----")
        shutil.rmtree(directory, ignore_errors=True)
    print(f"{'PASS' if passed == len(steps) else 'FAIL'}: {passed} of {len(steps)} steps passed")
    return 0 if passed == len(steps) else 1


if __name__ == "__main__":
    sys.exit(main())
