"""Chaos with the client killed too: a named run's ``imap_unordered`` whose client is
SIGKILLed every 30 to 90 s and started again, while slots die and freeze as in
:mod:`benchmarks.chaos` (and a whole node is killed, and another started, a minute in).

    python -m benchmarks.client_chaos             # 150,000 tasks, 3 nodes x 2 slots
    python -m benchmarks.client_chaos --quick     # 3,000 tasks, a kill every 3 to 6 s

Each client runs the same script: ``Pool(checkpoint=...)`` and an ``imap_unordered`` of the
same tasks, ``chunksize=1``. A rerun waits for the dead client's hold to lapse (up to 10 s),
takes up the journal and takes over the tasks the dead client left running (see
distpool.client.adoption). The client that lives to the end must yield every task's result
exactly once: ``lost`` and ``duplicated`` count those that it did not. ``reruns`` counts the
task bodies that ran more than once (slot kills, and the results a killed client had taken
but not yet journaled), and ``resumed`` the last client's results that came from the
journal or from tasks an earlier client had sent.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.chaos import WORKER_LOST_TIMEOUT, disturb, end_soak
from benchmarks.processes import REPO, Node, RedisServer

RESULTS = Path(__file__).parent / "results"
# The client: argv is the Redis URL (for the task counts), the tasks and the pool's size.
# It prints what it yielded: how many results were missing or came twice, and resumed.
CLIENT = ("import collections, json, sys, distpool, benchmarks.chaos as chaos; "
          "url, tasks, slots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]); "
          "pool = distpool.Pool(slots, checkpoint='client-chaos'); "
          "seen = collections.Counter(pool.imap_unordered("
          "chaos.chaos_task, [(i, url) for i in range(tasks)])); "
          "print(json.dumps({'lost': sum(seen[i] == 0 for i in range(tasks)), "
          "'duplicated': sum(seen[i] > 1 for i in range(tasks)), "
          "'resumed': pool.resumed}), flush=True); pool.close(); pool.join()")


def run(tasks: int, nodes: int, slots: int, kill_every: tuple[float, float],
        node_kill_after: float = 60.0, timeout: float = 1800.0) -> dict[str, Any]:
    server = RedisServer()
    url, queue, secret = server.url, "client-chaos", "c" * 32
    environment = {**os.environ, "PYTHONPATH": str(REPO), "DISTPOOL_BROKER_URL": url,
                   "DISTPOOL_QUEUE": queue, "DISTPOOL_SECRET": secret,
                   "DISTPOOL_CHECKPOINT_DIR": os.path.join(server.directory, "journals")}
    running: list[Node] = []
    stop = threading.Event()
    counts: Counter[str] = Counter()
    rng = random.Random()
    outcome: dict[str, Any] = {}
    started = time.monotonic()
    try:
        for _ in range(nodes):
            running.append(Node(url, queue, slots, secret, WORKER_LOST_TIMEOUT))
        disturber = threading.Thread(
            target=disturb, daemon=True,
            args=(running, stop, counts, started + node_kill_after,
                  lambda: Node(url, queue, slots, secret, WORKER_LOST_TIMEOUT)))
        disturber.start()
        while time.monotonic() - started < timeout:
            client = subprocess.Popen(
                [sys.executable, "-c", CLIENT, url, str(tasks), str(nodes * slots)],
                env=environment, cwd=REPO, stdout=subprocess.PIPE, text=True)
            try:
                output, _ = client.communicate(timeout=rng.uniform(*kill_every))
            except subprocess.TimeoutExpired:
                client.kill()
                client.communicate()
                counts["client kills"] += 1
                continue
            if client.returncode != 0:
                raise RuntimeError(f"the client exited with {client.returncode}")
            outcome = json.loads(output)
            break
        elapsed = time.monotonic() - started
        stop.set()
        disturber.join()
        runs = {int(k): int(v) for k, v in server.client.hgetall("chaos:runs").items()}
    finally:
        end_soak(stop, running, server)
    return {
        "tasks": tasks, "nodes": nodes, "slots_per_node": slots,
        "client_kills": counts["client kills"], "slot_kills": counts["slot kills"],
        "slot_freezes": counts["slot freezes"], "node_kills": counts["node kills"],
        "wall_s": round(elapsed, 1), "finished": bool(outcome),
        "lost": outcome.get("lost", tasks), "duplicated": outcome.get("duplicated", 0),
        "resumed": outcome.get("resumed", 0),
        "reruns": sum(runs.get(i, 0) - 1 for i in range(tasks) if runs.get(i, 0) > 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_chaos",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="3,000 tasks, a kill every 3-6 s; no results file")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    tasks = args.tasks or (3_000 if args.quick else 150_000)
    figures = run(tasks, args.nodes, args.slots, (3.0, 6.0) if args.quick else (30.0, 90.0))
    figures["taken"] = time.strftime("%Y-%m-%d")
    print(json.dumps(figures, indent=2))
    if not args.quick:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "client_chaos.json").write_text(json.dumps(figures, indent=2) + "\n")
    ok = figures["finished"] and figures["lost"] == 0 and figures["duplicated"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
