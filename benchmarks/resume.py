"""What a named run (``Pool(checkpoint=...)``) costs, and what it saves when its client dies.

    python -m benchmarks.resume           # 3 repetitions
    python -m benchmarks.resume --quick   # 1 repetition, smaller (CI)

On a node of 2 slots and a private Redis:

* journal cost: ``map(square, range(N))`` on a named pool against the same map unnamed, both
  against ``multiprocessing.Pool(2)`` in the same run: what journaling each result (a digest
  of its arguments, a record, fsynced in groups) adds per item;
* resume: a client runs a named ``map`` of tasks of 0.1 s, is killed (SIGKILL) half-way, and
  the same script runs again: the rerun's map against a whole run's, how many results came
  from the journal or from the dead client's tasks (which the workers finish meanwhile, and
  the rerun takes over), how many tasks ran twice, and how long its ``Pool()`` waited for
  the dead client's hold in the result store to lapse (up to 10 s).

Prints medians and ratios, and writes the raw figures (JSON).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import redis

import distpool
from benchmarks.processes import REPO, Node, RedisServer
from benchmarks.run import arguments, taken, versions
from benchmarks.workloads import square

SLOTS = 2
TASK_SECONDS = 0.1
# The client the resume workload kills: argv is the count URL, the run name and the items.
# It prints how long Pool() took (a rerun waits there for a dead client's hold to lapse),
# how long the map took, and how many results came from the journal.
CLIENT = ("import sys, time, distpool, benchmarks.resume as b; "
          "url, name, items = sys.argv[1], sys.argv[2], int(sys.argv[3]); "
          "started = time.perf_counter(); pool = distpool.Pool(2, checkpoint=name); "
          "opened = time.perf_counter(); "
          "pool.map(b.counted_sleep, [(url, i) for i in range(items)], chunksize=1); "
          "print(opened - started, time.perf_counter() - opened, pool.resumed, flush=True); "
          "pool.close(); pool.join()")


def counted_sleep(item: tuple[str, int]) -> int:
    """A task of TASK_SECONDS that counts itself done in Redis."""
    url, index = item
    time.sleep(TASK_SECONDS)
    redis.Redis.from_url(url).incr("done")
    return index


def journal_cost(pool_of: Any, items: int) -> float:
    """Seconds of ``map(square, range(items))`` on a pool made by ``pool_of()``."""
    with pool_of() as pool:
        pool.map(square, range(100))  # warm
        started = time.perf_counter()
        pool.map(square, range(items))
        return time.perf_counter() - started


def resumed_run(environment: dict[str, str], counter: redis.Redis, url: str,
                items: int) -> tuple[float, float, float, int, int]:
    """A whole named run's map seconds; then, for a run killed half-way and run again, the
    rerun's wait for the dead client's hold, its map's seconds, how many results it took
    from the journal or from the tasks the dead client had sent, and how many tasks ran
    twice."""
    def client(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", CLIENT, url, name, str(items)],
                                env=environment, cwd=REPO, stdout=subprocess.PIPE, text=True)

    counter.delete("done")
    whole = client(f"whole-{uuid.uuid4().hex[:8]}")
    _, whole_seconds, _ = whole.communicate(timeout=600)[0].split()
    counter.delete("done")
    name = f"killed-{uuid.uuid4().hex[:8]}"
    killed = client(name)
    while int(counter.get("done") or 0) < items // 2:
        time.sleep(0.01)
    killed.kill()
    killed.communicate()
    waited, seconds, resumed = client(name).communicate(timeout=600)[0].split()
    return (float(whole_seconds), float(waited), float(seconds), int(resumed),
            int(counter.get("done") or 0) - items)


def main(argv: list[str] | None = None) -> int:
    args = arguments("benchmarks.resume", __doc__).parse_args(argv)
    repeat, map_items, run_items = (1, 10_000, 20) if args.quick else (args.repeat, 100_000, 100)
    server = RedisServer()
    queue, secret = f"resume-{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    node = Node(server.url, queue, SLOTS, secret)
    settings = {"broker": server.url, "queue": queue, "secret": secret}
    environment = {**os.environ, "PYTHONPATH": str(REPO), "DISTPOOL_BROKER_URL": server.url,
                   "DISTPOOL_QUEUE": queue, "DISTPOOL_SECRET": secret,
                   "DISTPOOL_CHECKPOINT_DIR": os.path.join(server.directory, "journals")}
    os.environ["DISTPOOL_CHECKPOINT_DIR"] = environment["DISTPOOL_CHECKPOINT_DIR"]
    counter = redis.Redis.from_url(server.url.replace("/0", "/7"))
    figures: dict[str, list[float]] = {key: [] for key in (
        "mp_map", "unnamed_map", "named_map", "whole_run", "hold_wait", "rerun", "resumed",
        "ran_twice")}
    try:
        for _ in range(repeat):
            figures["mp_map"].append(journal_cost(lambda: multiprocessing.Pool(SLOTS),
                                                  map_items))
            figures["unnamed_map"].append(journal_cost(
                lambda: distpool.Pool(SLOTS, **settings), map_items))
            figures["named_map"].append(journal_cost(lambda: distpool.Pool(
                SLOTS, checkpoint=f"cost-{uuid.uuid4().hex[:8]}", **settings), map_items))
            whole, waited, rerun, resumed, twice = resumed_run(
                environment, counter, server.url.replace("/0", "/7"), run_items)
            figures["whole_run"].append(whole)
            figures["hold_wait"].append(waited)
            figures["rerun"].append(rerun)
            figures["resumed"].append(resumed)
            figures["ran_twice"].append(twice)
            print({key: round(values[-1], 3) for key, values in figures.items()},
                  file=sys.stderr)
    finally:
        node.stop()
        server.stop()
    medians = {key: statistics.median(values) for key, values in figures.items()}
    heading = taken(args.quick, repeat)
    print(f"\nTaken {heading}; {SLOTS} slots\n")
    print("| workload | figure | ratio |")
    print("|---|---|---|")
    print(f"| map(square, range({map_items:,})), unnamed | {medians['unnamed_map']:.2f} s | "
          f"{medians['unnamed_map'] / medians['mp_map']:.2f} x multiprocessing |")
    print(f"| the same, named (journaled) | {medians['named_map']:.2f} s | "
          f"{medians['named_map'] / medians['unnamed_map']:.2f} x unnamed |")
    print(f"| named map of {run_items} tasks of {TASK_SECONDS} s, whole | "
          f"{medians['whole_run']:.2f} s | |")
    print(f"| its rerun after a SIGKILL half-way | {medians['rerun']:.2f} s | "
          f"{medians['rerun'] / medians['whole_run']:.2f} x whole; "
          f"{medians['resumed']:.0f} of {run_items} from the journal or the dead client's "
          f"tasks; {medians['ran_twice']:.0f} ran twice |")
    print(f"| the rerun's Pool(), waiting for the dead client's hold to lapse | "
          f"{medians['hold_wait']:.2f} s | |")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "resume.json").write_text(json.dumps(
        {"taken": heading, "versions": versions(), "repeat": repeat, "map_items": map_items,
         "run_items": run_items, "task_seconds": TASK_SECONDS, "medians": medians,
         "runs": figures}, indent=2) + "\n")
    print(f"\nWrote {args.output / 'resume.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
