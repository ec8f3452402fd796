"""What shipping the user's own package costs: a 5 MB package, on nodes that never had it.

    python -m benchmarks.shipping           # 3 repetitions
    python -m benchmarks.shipping --quick   # 1 repetition, a 1 MB package (CI)

A client script maps a function of its package ``bigsim`` (5 MB of source in 50 modules)
over 40 short tasks, on 2 nodes of 2 slots that run from a directory of their own:

(a) cold: a new client process's first ``Pool()`` and map; the client builds the bundle, the
    pool stores it, and each node fetches and extracts it once;
(b) warm: a second map on that pool: nothing more travels;
(c) another pool in that client: the pool stores the bundle again, the nodes have it (a node
    that ran nothing in (a), its few messages having gone to the other node, fetches it now).

Against (d), the same maps on nodes that import the package from the client's directory
(``ship=False``), and multiprocessing.Pool(4) in the same client. Reported: each map's time
and its ratio to (d)'s; how many times each node fetched the bundle (target: once, for all
three maps); what Redis sent the workers for each map (target, over the three maps: the
bundle once per node, and within a twentieth of its size of (d)'s beyond that).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

from benchmarks.processes import REPO, Node, RedisServer
from benchmarks.run import arguments, taken, verdict
from distpool.wire.bundles import build

NODES, SLOTS, TASKS = 2, 2, 40

#: The client: prints, as JSON, each measured map's seconds and what Redis sent meanwhile.
CLIENT = textwrap.dedent("""
    import json, multiprocessing, sys, time
    import redis
    from distpool import Pool
    from bigsim.run import simulate

    sent = lambda: redis.Redis.from_url(sys.argv[1]).info("stats")["total_net_output_bytes"]
    figures = {}

    def measure(name, make_map):
        before, started = sent(), time.perf_counter()
        make_map()
        figures[name] = {"seconds": time.perf_counter() - started, "sent": sent() - before}

    tasks = list(range(%(tasks)d))
    pool = Pool(%(slots)d)
    try:
        measure("cold", lambda: pool.map(simulate, tasks, chunksize=1))
        measure("warm", lambda: pool.map(simulate, tasks, chunksize=1))
    finally:
        pool.terminate()
    with Pool(%(slots)d) as other:
        measure("new_pool", lambda: other.map(simulate, tasks, chunksize=1))
    with multiprocessing.Pool(%(slots)d) as mp:
        measure("multiprocessing", lambda: mp.map(simulate, tasks, chunksize=1))
    print(json.dumps(figures))
    """)


def write_package(root: Path, megabytes: float) -> int:
    """The package ``bigsim``: tables of numbers in 50 modules, ``megabytes`` of source,
    and ``run.simulate``, which uses one of them. Returns its size in bytes."""
    package = root / "bigsim"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    numbers = random.Random(0)
    per_module = int(megabytes * 2**20 / 50)
    size = 0
    for index in range(50):
        lines, length = [f"TABLE_{index} = ["], 0
        while length < per_module:
            line = "    " + ", ".join(f"{numbers.random():.6f}" for _ in range(8)) + ",\n"
            lines.append(line)
            length += len(line)
        lines.append("]\n")
        text = "".join(lines)
        (package / f"table_{index}.py").write_text(text)
        size += len(text)
    (package / "run.py").write_text(
        "from bigsim.table_0 import TABLE_0\n\n\n"
        "def simulate(case):\n    return case + TABLE_0[case % len(TABLE_0)]\n")
    return size


def run_client(project: Path, url: str, queue: str, secret: str, ship: bool) -> dict[str, Any]:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "DISTPOOL_BROKER_URL": url,
                   "DISTPOOL_QUEUE": queue, "DISTPOOL_SECRET": secret,
                   "DISTPOOL_SHIP": "auto" if ship else "0"}
    completed = subprocess.run(
        [sys.executable, "-c", CLIENT % {"tasks": TASKS, "slots": NODES * SLOTS}, url],
        cwd=project, env=environment, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


def measure(project: Path, ship: bool) -> tuple[dict[str, Any], list[int]]:
    """One run of the client on fresh nodes (with their own bundle caches): its figures, and
    how often each node extracted a bundle."""
    server = RedisServer()
    queue, secret = f"shipping-{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    nodes = []
    try:
        for index in range(NODES):
            cache = Path(server.directory) / f"cache-{index}"
            environment = {"DISTPOOL_CACHE_DIR": str(cache)}
            if not ship:  # the package, where the nodes import it from
                environment["PYTHONPATH"] = os.pathsep.join((str(REPO), str(project)))
            nodes.append(Node(server.url, queue, SLOTS, secret, options=["--loglevel", "INFO"],
                              environment=environment))
        figures = run_client(project, server.url, queue, secret, ship)
        return figures, [node.log().count("extracted to") for node in nodes]
    finally:
        for node in nodes:
            node.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    args = arguments("benchmarks.shipping", __doc__).parse_args(argv)
    repeat, megabytes = (1, 1.0) if args.quick else (args.repeat, 5.0)
    with tempfile.TemporaryDirectory(prefix="distpool-shipping-project-") as root:
        project = Path(root)
        size = write_package(project, megabytes)
        bundle = len(build((path.relative_to(project).as_posix(), str(path))
                           for path in (project / "bigsim").iterdir()))
        runs = [(measure(project, ship=True), measure(project, ship=False))
                for _ in range(repeat)]
    shipped = [figures for (figures, _), _ in runs]
    installed = [figures for _, (figures, _) in runs]
    fetches = [count for (_, counts), _ in runs for count in counts]

    def median(figures: list[dict[str, Any]], name: str, field: str) -> float:
        return statistics.median(run[name][field] for run in figures)

    rows = []
    for name, meaning in (("cold", "(a) first pool, cold nodes"),
                          ("warm", "(b) same pool, again"),
                          ("new_pool", "(c) another pool, same client")):
        seconds, baseline = median(shipped, name, "seconds"), median(installed, name, "seconds")
        rows.append({"map": name, "meaning": meaning, "shipped_s": seconds,
                     "installed_s": baseline, "ratio": seconds / baseline,
                     "sent_bytes": median(shipped, name, "sent"),
                     "installed_sent_bytes": median(installed, name, "sent"),
                     "multiprocessing_s": median(installed, "multiprocessing", "seconds")})
    # At most once a node: one whose slots got none of the maps' few messages (all went to
    # the other node's, as happens on a loaded machine) needs the bundle never.
    fetched_once = all(count <= 1 for count in fetches) and any(fetches)
    # A node's one fetch falls in (c) when (a)'s few messages all went to the other node's
    # slots: what counts is that Redis sent each node the bundle once, over the three maps.
    extra = sum(row["sent_bytes"] - row["installed_sent_bytes"] for row in rows)
    sends_bundle_once = extra < (NODES + 1 / 20) * bundle
    heading = taken(args.quick, repeat)
    print(f"Taken {heading}; package {size / 2**20:.1f} MB of source in 51 modules, "
          f"a bundle of {bundle / 2**20:.1f} MB; {TASKS} tasks a map, {NODES} nodes x {SLOTS} "
          "slots\n")
    print("| map | shipped | installed on the nodes | ratio | Redis sent (shipped) "
          "| Redis sent (installed) | multiprocessing |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['meaning']} | {row['shipped_s']:.3f} s | {row['installed_s']:.3f} s | "
              f"{row['ratio']:.2f} | {row['sent_bytes'] / 1e6:.2f} MB | "
              f"{row['installed_sent_bytes'] / 1e6:.2f} MB | {row['multiprocessing_s']:.3f} s |")
    print(f"\nbundle fetches per node, over the three maps: {fetches} "
          f"(target: at most 1 each): {verdict(fetched_once, False)}")
    print(f"over the three maps, Redis sent the workers the bundle once per node and nothing "
          f"more than with the package installed: {verdict(sends_bundle_once, False)}")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "shipping.json").write_text(json.dumps(
        {"taken": heading, "package_bytes": size, "bundle_bytes": bundle, "tasks": TASKS,
         "nodes": NODES,
         "slots": SLOTS, "maps": rows, "fetches_per_node": fetches,
         "runs": {"shipped": shipped, "installed": installed}}, indent=2) + "\n")
    return 0 if fetched_once and sends_bundle_once else 1


if __name__ == "__main__":
    sys.exit(main())
