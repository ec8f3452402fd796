"""Chaos: an ``imap_unordered`` with ``chunksize=1`` while slots die, freeze and come back.

    python -m benchmarks.chaos                      # the soak: 20,000 tasks, 3 nodes x 2 slots
    python -m benchmarks.chaos --tasks 2000 --quick

Worker slots are chosen at random, idle or busy, every 1-3 s: most are SIGKILLed, some are
SIGSTOPped for 1-4 s and let go on (past the ``worker_lost_timeout`` of 3 s, their messages
go to other slots). Half-way, a whole node (its parent and slots) is SIGKILLed and a new one
started. Every result must come back exactly once: ``lost`` counts the tasks whose result
never came (the run stops after ``--stall`` seconds without a result), ``duplicated`` those
that came twice. ``reruns`` counts task bodies that started again after their first run was
killed: expected, and not a fault.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

import distpool
from benchmarks.processes import Node, RedisServer

RESULTS = Path(__file__).parent / "results"
WORKER_LOST_TIMEOUT = 3

_runs: Any = None  # a worker process's Redis client, for counting task runs


def chaos_task(task: tuple[int, str]) -> int:
    """A task of 2 to 8 ms that counts its runs."""
    global _runs
    index, runs_url = task
    if _runs is None:
        _runs = redis.Redis.from_url(runs_url)
    _runs.hincrby("chaos:runs", str(index), 1)
    time.sleep(random.uniform(0.002, 0.008))
    return index


def disturb(nodes: list[Node], stop: threading.Event, counts: Counter[str],
             replace_node_at: float, start_node: Any) -> None:
    rng = random.Random()
    while not stop.wait(rng.uniform(1.0, 3.0)):
        if time.monotonic() >= replace_node_at:
            replace_node_at = float("inf")
            victim = nodes.pop(rng.randrange(len(nodes)))
            victim.kill()
            nodes.append(start_node())
            counts["node kills"] += 1
            continue
        pids = [pid for node in nodes for pid in node.slot_pids()]
        if not pids:
            continue
        pid = rng.choice(pids)
        try:
            if rng.random() < 0.75:
                os.kill(pid, signal.SIGKILL)
                counts["slot kills"] += 1
            else:
                os.kill(pid, signal.SIGSTOP)
                counts["slot freezes"] += 1
                stop.wait(rng.uniform(1.0, 4.0))
                os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def end_soak(stop: threading.Event, nodes: list[Node], server: RedisServer) -> None:
    """Stop a soak's disturbance, its nodes and its Redis (which removes its files)."""
    stop.set()
    for node in nodes:
        node.kill()
    server.stop()


def run(tasks: int, nodes: int, slots: int, stall: float = 90.0,
        node_kill_after: float = 10.0) -> dict[str, Any]:
    """Run the chaos once on a private Redis; return the figures. A whole node is killed
    (and another started) ``node_kill_after`` seconds in."""
    server = RedisServer()
    url, queue, secret = server.url, "chaos", "c" * 32
    plain = server.client
    running: list[Node] = []
    stop = threading.Event()
    counts: Counter[str] = Counter()
    seen: Counter[int] = Counter()
    try:
        for _ in range(nodes):
            running.append(Node(url, queue, slots, secret, WORKER_LOST_TIMEOUT))
        with distpool.Pool(nodes * slots, broker=url, queue=queue, secret=secret) as pool:
            pool.map(chaos_task, [(-1, url)] * (nodes * slots))  # every slot warm
            started = time.monotonic()
            disturber = threading.Thread(
                target=disturb, daemon=True,
                args=(running, stop, counts, started + node_kill_after,
                      lambda: Node(url, queue, slots, secret, WORKER_LOST_TIMEOUT)))
            disturber.start()
            results = pool.imap_unordered(chaos_task, ((i, url) for i in range(tasks)))
            try:
                while True:
                    seen[results.next(timeout=stall)] += 1
            except StopIteration:
                pass
            except distpool.TimeoutError:
                counts["stalled"] += 1
            elapsed = time.monotonic() - started
            stop.set()
            disturber.join()
            if counts["stalled"]:
                pool.terminate()
        runs = {int(k): int(v) for k, v in plain.hgetall("chaos:runs").items()}
    finally:
        end_soak(stop, running, server)
    return {
        "tasks": tasks, "nodes": nodes, "slots_per_node": slots,
        "slot_kills": counts["slot kills"], "slot_freezes": counts["slot freezes"],
        "node_kills": counts["node kills"], "wall_s": round(elapsed, 1),
        "lost": sum(1 for i in range(tasks) if seen[i] == 0),
        "duplicated": sum(1 for i in range(tasks) if seen[i] > 1),
        "reruns": sum(runs.get(i, 0) - 1 for i in range(tasks) if runs.get(i, 0) > 1),
        "stalled": bool(counts["stalled"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="do not write the results file")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    figures = run(args.tasks, args.nodes, args.slots)
    figures["taken"] = time.strftime("%Y-%m-%d")
    print(json.dumps(figures, indent=2))
    if not args.quick:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "chaos.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["lost"] == 0 and figures["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
