"""The tasks the scale benchmark's slots run. Every slot imports this module (and the package's
``__init__``) for them: what only the benchmark needs (psutil, matplotlib, distpool's client,
the rest of the benchmark) is imported elsewhere, so that it adds nothing to the slots'
memory."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

BEAT = "scale:beat"  # in the records' Redis: pid -> time of the task's last heartbeat

_records: dict[str, Any] = {}  # a slot's Redis clients for the records, by URL


def sleep_task(task: tuple[int, float]) -> tuple[int, int, float, float]:
    """Sleep; return the task's index, the slot's pid, and when it started and ended."""
    index, seconds = task
    started = time.time()
    time.sleep(seconds)
    return index, os.getpid(), started, time.time()


def beating_sleep(task: tuple[float, str]) -> int:
    """Sleep ``seconds``, writing a heartbeat (``BEAT``: pid -> time) every 0.1 s to the
    records' Redis: it stops however the task is stopped."""
    seconds, url = task
    if url not in _records:
        _records[url] = redis.Redis.from_url(url)
    records, pid = _records[url], str(os.getpid())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        records.hset(BEAT, pid, repr(time.time()))
        time.sleep(0.1)
    return os.getpid()
