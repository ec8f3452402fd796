"""The processes a cluster benchmark starts (:mod:`benchmarks.chaos`, :mod:`benchmarks.scale`):
a private Redis server and ``distpool worker`` nodes, each in a session of its own so that
a whole node (its parent and its slots) can be killed or stopped at once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from distpool.local.supervisor import find_redis_server, free_port

REPO = Path(__file__).resolve().parent.parent


class RedisServer:
    """A private redis-server on a free loopback port, keeping nothing on disk (its working
    directory is ``directory``, which the caller removes; else a temporary one of its own,
    ``self.directory``, removed when it stops)."""

    def __init__(self, directory: str | None = None, maxclients: int = 10_000) -> None:
        executable = find_redis_server()
        if executable is None:
            raise RuntimeError("no redis-server")
        self._owns_directory = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="distpool-benchmark-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory, "--maxclients", str(maxclients)],
            stdout=subprocess.DEVNULL, start_new_session=True)
        self.client = redis.Redis.from_url(self.url)
        wait_for(self.client.ping)

    def stop(self) -> None:
        self.client.close()
        self.process.kill()
        self.process.wait()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


class Node:
    """One ``distpool worker`` node serving ``queue`` with ``slots`` slots, run from the
    repository (its tasks import the benchmarks), logging to a temporary file."""

    def __init__(self, url: str, queue: str, slots: int, secret: str,
                 worker_lost_timeout: float | None = None, tmpdir: str | None = None,
                 options: Sequence[str] = (), environment: Mapping[str, str] = {}) -> None:
        """``options``: more of ``distpool worker``'s; ``environment``: what the node's
        adds (``PYTHONPATH`` replaces the repository's)."""
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the node
        options = [*options, *([] if worker_lost_timeout is None
                               else ["--worker-lost-timeout", str(worker_lost_timeout)])]
        environment = {**os.environ, "PYTHONPATH": str(REPO), "DISTPOOL_SECRET": secret,
                       **environment}
        if tmpdir is not None:
            environment["TMPDIR"] = tmpdir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "distpool", "worker", "--broker", url, "--queue", queue,
             "--concurrency", str(slots), *options],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env=environment)

    def slot_pids(self) -> list[int]:
        import psutil

        try:
            return [child.pid for child in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL the whole node."""
        if not self._log.closed:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            self._log.close()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the node, then SIGKILL what is left after ``timeout`` (and stragglers)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill()


def wait_for(ping: Callable[[], Any], timeout: float = 10.0) -> None:
    """Call ``ping`` until it stops raising ``redis.ConnectionError`` (re-raised after
    ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
