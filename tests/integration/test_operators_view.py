"""What operators see of a pool's tasks in Celery's tools: the user's function by name (Celery's
shadow name, not ``distpool.execute``) and a readable description of each message's tasks, in
``celery inspect active`` and in a real Flower fed by the workers' events (``-E``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

import distpool
from distpool.brokers.celery_app import new_app
from distpool.config import resolve
from tests.support import environment_without_distpool, free_port, stop_process_group

pytestmark = pytest.mark.integration

LABEL = f"{__name__}.simulate_outage"


def simulate_outage(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_celery_inspect_and_the_worker_log_show_the_users_function(make_cluster):
    cluster = make_cluster(concurrency=1)
    app = new_app(resolve(**cluster.pool_kwargs(), environ={}))
    with distpool.Pool(1, **cluster.pool_kwargs()) as pool:
        # Long enough to be seen however slowly inspect starts (a loaded machine took over
        # 3 s): the pool's end (terminate) stops it once it has been.
        pool.apply_async(simulate_outage, (60,))
        deadline = time.monotonic() + 30
        active: list[dict[str, Any]] = []
        while not active and time.monotonic() < deadline:
            replies = app.control.inspect(timeout=1).active() or {}
            active = [task for tasks in replies.values() for task in tasks]
    [task] = active
    assert task["name"] == LABEL
    assert task["type"] == "distpool.execute"
    assert task["args"].startswith("pool ") and ": task 0:0, arguments " in task["args"]
    log = cluster.workers[0].log()
    assert f"Task {LABEL}[{task['id']}] received" in log
    assert "distpool.execute[" not in log


@pytest.fixture
def flower(make_cluster):
    """A cluster whose workers send events, watched by a Flower on a free port."""
    pytest.importorskip("flower")
    cluster = make_cluster(concurrency=2, extra_args=["-E"])
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "--broker", cluster.broker, "flower",
         f"--port={port}", "--address=127.0.0.1"],
        env=environment_without_distpool(FLOWER_UNAUTHENTICATED_API="true"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthcheck", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process_group(process)
                pytest.fail("flower did not start")
            time.sleep(0.2)
    time.sleep(1)  # its event receiver subscribes after the web server starts
    yield cluster, url
    stop_process_group(process, signal.SIGTERM)


def test_flower_lists_each_task_by_the_users_function(flower):
    cluster, url = flower
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        assert len(set(pool.map(simulate_outage, [0.2] * 4, chunksize=1))) >= 1
    deadline = time.monotonic() + 15
    tasks: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/tasks", timeout=5) as response:
            tasks = json.load(response)
        if len([t for t in tasks.values() if t.get("state") == "SUCCESS"]) >= 4:
            break
        time.sleep(0.5)
    assert len(tasks) == 4
    assert {task["name"] for task in tasks.values()} == {LABEL}
    assert {task["state"] for task in tasks.values()} == {"SUCCESS"}
    assert sorted(task["args"].split(": ")[1].split(",")[0] for task in tasks.values()) == [
        f"task 0:{index}" for index in range(4)]
