"""The cluster of a scale run: a broker, a Redis for the tasks' records, and the nodes;
:func:`cluster` starts them and stops them all."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.processes import Node, RedisServer

QUEUE = "scale"


@contextmanager
def cluster(nodes: int, slots: int, secret: str, worker_lost_timeout: float | None
            ) -> Iterator[tuple[RedisServer, RedisServer, list[Node]]]:
    """A broker, a Redis for the tasks' records, and ``nodes`` nodes (started last, so that
    their start can be timed): every process stopped, every file removed, at the end."""
    directory = tempfile.mkdtemp(prefix="distpool-scale-")
    servers: list[RedisServer] = []
    running: list[Node] = []
    try:
        servers.append(RedisServer(directory, maxclients=max(10_000, 20 * nodes * slots)))
        servers.append(RedisServer(directory))
        running.extend(Node(servers[0].url, QUEUE, slots, secret, worker_lost_timeout, directory)
                       for _ in range(nodes))
        yield servers[0], servers[1], running
    finally:
        for node in running:  # all at once, not one after the other
            if node.process.poll() is None:
                try:
                    os.killpg(node.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for node in running:
            node.stop()
        for server in servers:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
