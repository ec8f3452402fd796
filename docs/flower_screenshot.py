"""Take docs/flower-tasks.png: Flower's tasks page after the forecast example ran on workers
started with ``-E``, in headless Chromium.

    python docs/flower_screenshot.py          # needs redis-server, flower and chromium

It starts a private Redis, one ``distpool worker -E`` node and Flower, runs the example's
forecast on them, and stops them all.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "flower-tasks.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).read()
        return True
    except OSError:
        return False


def main() -> int:
    directory = tempfile.mkdtemp(prefix="distpool-flower-")
    redis_port, flower_port = free_port(), free_port()
    broker = f"redis://127.0.0.1:{redis_port}/0"
    environment = {**os.environ, "DISTPOOL_BROKER_URL": broker,
                   "DISTPOOL_SECRET": secrets.token_hex(16), "FLOWER_UNAUTHENTICATED_API": "1",
                   "PYTHONPATH": str(ROOT / "examples")}
    started: list[subprocess.Popen[bytes]] = []

    def start(*command: str) -> None:
        started.append(subprocess.Popen(command, cwd=directory, env=environment,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True))

    try:
        start("redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no")
        time.sleep(0.5)
        start(sys.executable, "-m", "distpool", "worker", "-c", "2", "-E", "-n", "forecast@%h")
        start(sys.executable, "-m", "celery", "--broker", broker, "flower",
              f"--port={flower_port}", "--address=127.0.0.1")
        flower = f"http://127.0.0.1:{flower_port}"
        wait_for("flower", lambda: answers(f"{flower}/healthcheck"))
        wait_for("the workers", lambda: urllib.request.urlopen(
            f"{flower}/api/workers?refresh=1", timeout=5).read().count(b"forecast") >= 2)
        subprocess.run([sys.executable, "forecast.py"], cwd=ROOT / "examples", env=environment,
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
        time.sleep(2)  # the last events reach Flower
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={directory}/chromium",
             "--window-size=1400,900", "--virtual-time-budget=5000",
             f"--screenshot={OUTPUT}", f"{flower}/tasks"], check=True, timeout=120,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"wrote {OUTPUT}")
        return 0
    finally:
        for process in reversed(started):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            process.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
