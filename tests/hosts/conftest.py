"""A cluster across separate hosts (see :mod:`tests.hosts.network`): Redis on a host of its
own, worker nodes on others, and the client's project on the client's host alone."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from distpool.local.supervisor import find_redis_server
from tests.hosts.network import Host, Network, unavailable
from tests.support import REPO_ROOT, START_TIMEOUT, environment_without_distpool

pytestmark = pytest.mark.integration

REDIS_PORT = 6379


class HostCluster:
    """A broker host running Redis, a client host, and worker hosts to start nodes on."""

    def __init__(self, network: Network, workers: int) -> None:
        self.network = network
        self.secret = secrets.token_hex(16)
        self.queue = f"hosts-{uuid.uuid4().hex[:8]}"
        self.broker_host = network.add_host("broker", hide_tmp=False)
        self.client_host = network.add_host("client", hide_tmp=False)
        self.worker_hosts = [network.add_host(f"w{index + 1}") for index in range(workers)]
        self.url = f"redis://{self.broker_host.address}:{REDIS_PORT}/0"
        executable = find_redis_server()
        if executable is None:
            pytest.skip("no redis-server (.ci/run installs it)")
        self.redis = self.broker_host.popen(
            [executable, "--bind", self.broker_host.address, "127.0.0.1", "--port",
             str(REDIS_PORT), "--protected-mode", "no", "--save", "", "--appendonly", "no"],
            env=dict(os.environ), log=self.broker_host.files / "redis.log")
        self.wait_for(lambda: self.redis_command("PING") == "True", "Redis to start")

    def environment(self, **extra: str) -> dict[str, str]:
        """A process's environment for this cluster: its broker, queue and key."""
        return environment_without_distpool(**{
            "PYTHONPATH": str(REPO_ROOT), "DISTPOOL_BROKER_URL": self.url,
            "DISTPOOL_QUEUE": self.queue, "DISTPOOL_SECRET": self.secret, **extra})

    def start_node(self, host: Host, slots: int = 2, *options: str,
                   **environment: str) -> None:
        """``distpool worker`` on ``host``, its log in the host's directory (node.log)."""
        host.popen([sys.executable, "-m", "distpool", "worker", "--concurrency", str(slots),
                    "--name", "node@%h", "--loglevel", "INFO", *options],
                   env=self.environment(**environment), log=host.files / "node.log")

    def wait_for_slots(self, slots: int) -> None:
        self.wait_for(lambda: sum(node["slots"] for node in self.status()["nodes"]
                                  if node["alive"]) >= slots, f"{slots} slots to serve")

    def status(self) -> dict:
        """``distpool status --json``, run on the client's host."""
        completed = self.client_host.run(
            [sys.executable, "-m", "distpool", "status", "--json"], env=self.environment())
        if not completed.stdout.strip():
            return {"nodes": [], "pools": [], "error": completed.stderr}
        return json.loads(completed.stdout)

    def redis_command(self, *command: str) -> str:
        """A Redis command's reply, as text, asked on the broker's host."""
        completed = self.broker_host.run(
            [sys.executable, "-c", "import redis, sys; reply = redis.Redis("
             "decode_responses=True).execute_command(*sys.argv[1:]); print(reply)", *command],
            env=dict(os.environ))
        return completed.stdout.strip()

    def log(self, host: Host) -> str:
        return (host.files / "node.log").read_text(errors="replace")

    @staticmethod
    def wait_for(condition, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[HostCluster]:
    """A broker, a client and two worker hosts; no node runs yet."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"no separate hosts here: {reason}")
    network = Network(tmp_path / "hosts")
    try:
        yield HostCluster(network, workers=2)
    finally:
        network.remove()
