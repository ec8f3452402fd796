"""A node killed outright leaves its slots' state directory behind; the next node to start
on the machine removes it, and leaves the directories of live nodes alone."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from distpool.worker.slots.state import DIRECTORY_PREFIX, OWNER_FILE
from tests.support import (
    REPO_ROOT,
    START_TIMEOUT,
    environment_without_distpool,
    stop_process_group,
    wait_until,
)

pytestmark = pytest.mark.integration


class Node:
    """``distpool worker`` with one slot, and a temporary directory of the test's."""

    def __init__(self, broker: str, temporary: Path) -> None:
        before = set(temporary.glob(f"{DIRECTORY_PREFIX}*"))
        environment = environment_without_distpool(
            PYTHONPATH=str(REPO_ROOT), DISTPOOL_SECRET=secrets.token_hex(16),
            TMPDIR=str(temporary))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "distpool", "worker", "--broker", broker,
             "--queue", f"test-{uuid.uuid4().hex[:12]}", "--concurrency", "1"],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        # Made once the node has removed the leftovers it found, if any.
        deadline = time.monotonic() + START_TIMEOUT
        while not (made := set(temporary.glob(f"{DIRECTORY_PREFIX}*")) - before):
            assert self.process.poll() is None, "the node exited"
            assert time.monotonic() < deadline, "the node made no state directory"
            time.sleep(0.05)
        (self.directory,) = made


def test_the_directory_of_a_node_killed_outright_goes_when_the_next_starts(redis_server,
                                                                          tmp_path):
    nodes = []
    try:
        killed = Node(redis_server.url(), tmp_path)
        nodes.append(killed)
        live = Node(redis_server.url(), tmp_path)
        nodes.append(live)
        os.killpg(killed.process.pid, signal.SIGKILL)  # the parent and its slot, at once
        killed.process.wait(10)
        assert killed.directory.exists()  # nobody was left to remove it
        nodes.append(Node(redis_server.url(), tmp_path))
        assert not killed.directory.exists()
        # The live node's, untouched: its lock said its parent lives.
        assert (live.directory / OWNER_FILE).read_text().strip() == str(live.process.pid)
        # Written when its parent starts the slot, once it has preloaded: maybe not yet.
        wait_until((live.directory / "slot-0").exists, what="the live node's slot file")
        stop_process_group(live.process)  # SIGTERM: a node that stops removes its own
        assert not live.directory.exists()
    finally:
        for node in nodes:
            stop_process_group(node.process)
