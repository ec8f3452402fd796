"""The benchmark workloads, each run against multiprocessing.Pool and distpool.Pool.

A workload receives a ``Pools`` (how to make a pool of the kind under test) and a size
factor, and returns one figure. Task functions live here, at module level, so both kinds of
pool refer to them by name.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import psutil


def square(x: int) -> int:
    return x * x


def noop() -> None:
    return None


def burn(seconds: float) -> int:
    """Busy CPU for about ``seconds``."""
    deadline = time.process_time() + seconds
    count = 0
    while time.process_time() < deadline:
        count += 1
    return count


@dataclass(frozen=True)
class Pools:
    """How to make pools of one kind: ``attached`` joins workers that already run,
    ``fresh`` starts everything the pool needs, as a user's first ``Pool()`` does.
    ``session`` is entered around each measurement, untimed: the workers a comparison's
    pools attach to run only then, so their idle load does not weigh on the others.
    ``unsupported`` names the workloads this kind cannot run. ``redis_url`` is the Redis
    that attached pools send through, if any: the workloads that count its traffic read it."""

    kind: str
    attached: Callable[[], Any]
    fresh: Callable[[], Any]
    session: Callable[[], AbstractContextManager[Any]] = nullcontext
    unsupported: frozenset[str] = frozenset()
    redis_url: str | None = None
    new_process: tuple[str, Mapping[str, str]] | None = None


@dataclass(frozen=True)
class Workload:
    """``limit`` gives, from multiprocessing's figure, the worst figure distpool may have."""

    name: str
    description: str
    unit: str
    higher_is_better: bool
    target: str
    limit: Callable[[float], float]
    run: Callable[[Pools, float], float]

    def cost(self, multiprocessing: float, distpool: float) -> float:
        """distpool's figure as a fraction of what the target allows: <= 1 meets it."""
        limit = self.limit(multiprocessing)
        return limit / distpool if self.higher_is_better else distpool / limit


def map_square(pools: Pools, size: float) -> float:
    n = int(100_000 * size)
    with pools.attached() as pool:
        started = time.perf_counter()
        result = pool.map(square, range(n))
        elapsed = time.perf_counter() - started
    assert result[-1] == (n - 1) ** 2
    return elapsed * 1000


def sequential_apply(pools: Pools, size: float) -> float:
    calls = max(20, int(500 * size))
    with pools.attached() as pool:
        pool.apply(noop)  # warm: the first call of a pool pays its set-up
        started = time.perf_counter()
        for _ in range(calls):
            pool.apply(noop)
        elapsed = time.perf_counter() - started
    return elapsed / calls * 1000


def apply_async_throughput(pools: Pools, size: float) -> float:
    tasks = max(100, int(2000 * size))
    with pools.attached() as pool:
        pool.apply(noop)
        started = time.perf_counter()
        results = [pool.apply_async(noop) for _ in range(tasks)]
        for result in results:
            result.get()
        elapsed = time.perf_counter() - started
    return tasks / elapsed


def cpu_bound_throughput(pools: Pools, size: float) -> float:
    tasks = max(4, int(40 * size))
    with pools.attached() as pool:
        pool.apply(noop)
        started = time.perf_counter()
        pool.map(burn, [0.1] * tasks, chunksize=1)
        elapsed = time.perf_counter() - started
    return tasks / elapsed


def first_result_attached(pools: Pools, size: float) -> float:
    started = time.perf_counter()
    with pools.attached() as pool:
        pool.apply(noop)
        elapsed = time.perf_counter() - started
    return elapsed * 1000


def first_result_fresh(pools: Pools, size: float) -> float:
    started = time.perf_counter()
    with pools.fresh() as pool:
        pool.apply(noop)
        elapsed = time.perf_counter() - started
    return elapsed


#: A new interpreter's first pool: its import, then ``Pool()`` to the first result, timed apart.
NEW_PROCESS_POOL = """
import json, sys, time
started = time.perf_counter()
Pool = __import__(sys.argv[1], fromlist=["Pool"]).Pool
imported = time.perf_counter()
with Pool(2) as pool:
    pool.apply(abs, (0,))
    print(json.dumps([imported - started, time.perf_counter() - imported]))
"""


def first_result_new_process(pools: Pools, size: float) -> float:
    """``Pool()`` to its first result in a new process, after ``from ... import Pool`` (whose
    time goes to stderr): what a script that opens one pool and exits waits for."""
    assert pools.new_process is not None, f"{pools.kind} has no new-process pool"
    module, environment = pools.new_process
    completed = subprocess.run(
        [sys.executable, "-c", NEW_PROCESS_POOL, module], capture_output=True, text=True,
        timeout=120, check=True, env={**os.environ, **environment})
    imported, first_result = json.loads(completed.stdout)
    print(f"  {pools.kind}: import {imported * 1000:.1f} ms, then Pool() to first result "
          f"{first_result * 1000:.1f} ms", file=sys.stderr)
    return float(first_result) * 1000


def imap_memory(pools: Pools, size: float) -> float:
    """Growth of this process's memory (MB) while imap consumes a long generator."""
    n = int(10_000_000 * size)
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with pools.attached() as pool:
            total = sum(pool.imap(square, itertools.islice(itertools.count(), n),
                                  chunksize=10_000))
    finally:
        done.set()
        sampler.join()
    assert total == sum(x * x for x in range(n))
    return (peak[0] - baseline) / 2**20


WORKLOADS = [
    Workload("map_100k", "map(square, range(100_000)), default chunksize", "ms", False,
             "<= 2.5 x multiprocessing", lambda mp: 2.5 * mp, map_square),
    Workload("apply_sequential", "sequential apply(noop), per call", "ms", False,
             "<= 2 ms", lambda mp: 2.0, sequential_apply),
    Workload("apply_async_2000", "2,000 apply_async(noop), then get all", "tasks/s", True,
             ">= 1,000 tasks/s", lambda mp: 1000.0, apply_async_throughput),
    Workload("cpu_40x100ms", "40 tasks of 100 ms CPU each", "tasks/s", True,
             ">= 95% of multiprocessing", lambda mp: 0.95 * mp, cpu_bound_throughput),
    Workload("first_result_attached", "Pool() on running workers to first result", "ms",
             False, "<= 50 ms", lambda mp: 50.0, first_result_attached),
    Workload("first_result_new_process",
             "Pool() on running workers to first result, in a new process (after its import)",
             "ms", False, "<= 50 ms", lambda mp: 50.0, first_result_new_process),
    Workload("first_result_fresh", "Pool(2) from nothing to first result (local cluster)", "s",
             False, "<= 1.5 s", lambda mp: 1.5, first_result_fresh),
    Workload("imap_10M_memory", "imap over a 10-million-item generator, client memory growth",
             "MB", False, "< 50 MB", lambda mp: 50.0, imap_memory),
]
