"""One slot that keeps dying backs off alone, the others serve on, and the parent says so on
stderr (distpool.slots: Restarts, Logging)."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import pytest

import distpool
from tests.support import slot_processes

pytestmark = pytest.mark.integration


def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()


def test_a_slot_killed_again_and_again_backs_off_alone_and_the_node_says_so(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2)
    worker = cluster.workers[0]
    healthy, victim = slot_processes(worker)
    served = []
    stop = threading.Event()

    def keep_serving(pool):
        while not stop.is_set():
            started = time.monotonic()
            served.append((pool.apply_async(pid_after, (0.05,)).get(timeout=20),
                           time.monotonic() - started))

    with distpool.Pool(1, **cluster.pool_kwargs()) as pool:
        server = threading.Thread(target=keep_serving, args=(pool,))
        killed, appeared = [], []
        try:
            for _ in range(3):
                # While idle: before any task here, then as soon as it reappears, before
                # its Celery worker has started consuming.
                victim.send_signal(signal.SIGKILL)
                killed.append(victim.pid)
                if not server.is_alive():
                    server.start()
                deadline = time.monotonic() + 30
                while True:
                    others = [c for c in slot_processes(worker)
                              if c.pid not in (healthy.pid, *killed)]
                    if others:
                        victim = others[0]
                        appeared.append(time.monotonic())
                        break
                    assert time.monotonic() < deadline, "the slot was not restarted"
                    time.sleep(0.02)
        finally:
            stop.set()
            if server.is_alive():
                server.join(30)
        assert worker.process.poll() is None, "the node gave up"
        assert healthy.pid in {c.pid for c in slot_processes(worker)}

    # Restarted later and later: 1, 2 then 4 s after each death, not at once.
    gaps = [b - a for a, b in zip(appeared, appeared[1:])]
    assert gaps[-1] >= 3.5 and gaps[-1] > gaps[0] + 1.5, gaps
    # Tasks kept being served, promptly, throughout.
    assert len(served) >= 20 and max(seconds for _, seconds in served) < 5

    log = worker.log()
    node = worker.name.replace("%h", socket.gethostname())
    for count, (pid, delay) in enumerate(zip(killed, (1, 2, 4)), start=1):
        assert re.search(rf"WARNING/{re.escape(node)}\] slot \d \(pid {pid}\) died while "
                         rf"idle \(killed by SIGKILL\), {count} time\(s\) in a row; "
                         rf"restarting it in {delay} s", log), log
    assert len(re.findall(rf"WARNING/{re.escape(node)}\] slot \d replaced: pid", log)) == 3
