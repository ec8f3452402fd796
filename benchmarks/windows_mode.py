"""What a task costs on a worker in the simulated-Windows mode, against the Linux mode.

    python -m benchmarks.windows_mode           # 3 repetitions, 500 applies
    python -m benchmarks.windows_mode --quick   # 1 repetition, 50 applies (CI)

The simulated-Windows mode (``tests/windows_mode`` first on a worker's ``PYTHONPATH``) runs a
worker node as it runs on Windows, where distpool can tell: slots started as fresh
interpreters (spawn), Celery's blocking loop (synloop) instead of its event loop, distpool's
Windows decisions. Two workloads of trivial tasks measure the overhead per task, and a
third how soon the workers stop:

* apply: sequential ``pool.apply(noop)``, the median time of one call (latency);
* map: ``pool.map(square, range(200), chunksize=1)``, its time per item (throughput), the
  median of 5 maps;
* stop: from SIGTERM to its exit, for an idle node (a service's stop, Ctrl-Break on
  Windows); for multiprocessing, ``close()`` and ``join()`` of the idle pool.

Each runs on (i) multiprocessing.Pool(2), (ii) distpool.Pool(2) on a node of 2 slots in the
normal (Linux) mode, (iii) the same on a node in the simulated-Windows mode (the client is in
the normal mode in both). The nodes serve queues of one private Redis, each running only
while it is measured; the three are interleaved in each repetition, and each figure is also
given as a ratio to multiprocessing's in the same run. Prints medians and ratios, and writes
the raw figures (JSON).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil

import distpool
from benchmarks.processes import REPO, Node, RedisServer
from benchmarks.run import arguments, taken, versions
from benchmarks.workloads import noop, square

SLOTS = 2
MAP_ITEMS = 200
MAPS = 5
WINDOWS_MODE = REPO / "tests" / "windows_mode"
#: kind -> column title.
KINDS = {"multiprocessing": "multiprocessing.Pool(2)", "linux": "distpool, Linux mode",
         "windows": "distpool, simulated Windows"}


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def apply_median(pool: Any, calls: int) -> float:
    """Milliseconds: the median of ``calls`` sequential ``apply(noop)``."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        pool.apply(noop)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def map_per_item(pool: Any) -> float:
    """Milliseconds per item of a ``map`` of :data:`MAP_ITEMS` trivial items, chunksize 1:
    the median of :data:`MAPS` maps (one lasts a few tens of milliseconds)."""
    times = []
    for _ in range(MAPS):
        started = time.perf_counter()
        result = pool.map(square, range(MAP_ITEMS), chunksize=1)
        times.append(time.perf_counter() - started)
        assert result[-1] == (MAP_ITEMS - 1) ** 2
    return statistics.median(times) / MAP_ITEMS * 1000


def warm(pool: Any) -> None:
    """Return once both processes serve and the pool has run a few tasks: a pool's set-up
    and a process's first tasks are not what is measured."""
    deadline = time.monotonic() + 60
    while len(set(pool.map(pid_after, [0.2] * SLOTS, chunksize=1))) < SLOTS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{SLOTS} processes did not serve within 60 s")
    for _ in range(20):
        pool.apply(noop)


@contextmanager
def warm_pool(kind: str, server: RedisServer, stops: list[float]) -> Iterator[Any]:
    """A warm pool of ``kind``; a distpool one on a node started for it, stopped after; how
    long the stop took goes to ``stops`` (ms)."""
    if kind == "multiprocessing":
        pool = multiprocessing.Pool(SLOTS)
        try:
            warm(pool)
            yield pool
            started = time.perf_counter()
            pool.close()
            pool.join()
            stops.append((time.perf_counter() - started) * 1000)
        finally:
            pool.terminate()
        return
    queue, secret = f"windows-mode-{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    environment = {} if kind == "linux" else {
        "PYTHONPATH": os.pathsep.join([str(WINDOWS_MODE), str(REPO)])}
    node = Node(server.url, queue, SLOTS, secret, environment=environment)
    try:
        with distpool.Pool(SLOTS, broker=server.url, queue=queue, secret=secret) as pool:
            warm(pool)
            spawned = [pid for pid in node.slot_pids()
                       if "spawn_main" in " ".join(psutil.Process(pid).cmdline())]
            if (len(spawned) >= SLOTS) != (kind == "windows"):  # the mode is what it says
                raise RuntimeError(f"{kind}: {len(spawned)} spawned slots\n{node.log()}")
            yield pool
        started = time.perf_counter()
        node.stop()
        stops.append((time.perf_counter() - started) * 1000)
    finally:
        node.stop()


def main(argv: list[str] | None = None) -> int:
    args = arguments("benchmarks.windows_mode", __doc__).parse_args(argv)
    repeat, calls = (1, 50) if args.quick else (args.repeat, 500)
    workloads = {"apply": f"sequential apply(noop), median of {calls} calls",
                 "map": f"map(square, range({MAP_ITEMS}), chunksize=1), per item, "
                        f"median of {MAPS}",
                 "stop": "an idle node's stop, SIGTERM to exit (multiprocessing: close, join)"}
    runs: dict[str, dict[str, list[float]]] = {
        name: {kind: [] for kind in KINDS} for name in workloads}
    server = RedisServer()
    try:
        for _ in range(repeat):
            for kind in KINDS:
                with warm_pool(kind, server, runs["stop"][kind]) as pool:
                    runs["apply"][kind].append(apply_median(pool, calls))
                    runs["map"][kind].append(map_per_item(pool))
                print(f"{kind}: apply {runs['apply'][kind][-1]:.3f} ms, "
                      f"map {runs['map'][kind][-1]:.3f} ms per item, "
                      f"stop {runs['stop'][kind][-1]:.0f} ms", file=sys.stderr)
    finally:
        server.stop()

    rows = []
    for name, description in workloads.items():
        medians = {kind: statistics.median(figures) for kind, figures in runs[name].items()}
        rows.append({"name": name, "description": description, "unit": "ms", **medians,
                     "linux_over_mp": medians["linux"] / medians["multiprocessing"],
                     "windows_over_mp": medians["windows"] / medians["multiprocessing"],
                     "windows_over_linux": medians["windows"] / medians["linux"],
                     "runs": runs[name]})
    heading = taken(args.quick, repeat)
    print(f"\nTaken {heading}; {SLOTS} processes each\n")
    print("| workload | " + " | ".join(KINDS.values())
          + " | Linux mode / mp | Windows mode / mp | Windows / Linux mode |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['description']} | "
              + " | ".join(f"{row[kind]:.3f} ms" for kind in KINDS)
              + f" | {row['linux_over_mp']:.1f} | {row['windows_over_mp']:.1f} | "
                f"{row['windows_over_linux']:.2f} |")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "windows_mode.json").write_text(json.dumps(
        {"taken": heading, "versions": versions(), "repeat": repeat, "calls": calls,
         "map_items": MAP_ITEMS, "maps": MAPS, "slots": SLOTS, "workloads": rows}, indent=2) + "\n")
    print(f"\nWrote {args.output / 'windows_mode.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
