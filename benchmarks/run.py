"""Run every workload against multiprocessing.Pool(2) and distpool.Pool(2), in one run.

    python -m benchmarks.run                  # 3 repetitions, full size
    python -m benchmarks.run --quick          # 1 repetition, small sizes (CI)

distpool runs on a local cluster with 2 worker processes: started once for the workloads
that attach to running workers, and afresh (``Pool(2)`` with no broker) for the start-up
one. Prints medians and ratios, and writes the raw figures (JSON) and a chart (PNG).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import distpool
from benchmarks.workloads import WORKLOADS, Pools, Workload
from distpool.cluster import LocalCluster

PROCESSES = 2
RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def measure(workload: Workload, pools: Pools, size: float, repeat: int) -> list[float]:
    return [workload.run(pools, size) for _ in range(repeat)]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | unit | multiprocessing | distpool | distpool / mp | target | met |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['description']} | {row['unit']} | {row['multiprocessing']:.3g} | "
            f"{row['distpool']:.3g} | {row['ratio']:.2f} | {row['target']} | "
            f"{'yes' if row['cost'] <= 1 else '**no**'} |")
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [f"{row['name']}\n({row['target']})" for row in rows]
    costs = [row["cost"] for row in rows]
    ax.barh(names, costs, color=["#4c72b0" if c <= 1 else "#dd8452" for c in costs])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("distpool's figure / what its target allows (log; <= 1 meets the target)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title, fontsize=9)
    for y, value in enumerate(costs):
        ax.text(value, y, f" {value:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median is kept)")
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition at a tenth of the size: checks they still run")
    parser.add_argument("--only", nargs="*", help="workload names to run")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write results")
    args = parser.parse_args(argv)
    repeat, size = (1, 0.1) if args.quick else (args.repeat, 1.0)
    workloads = [w for w in WORKLOADS if not args.only or w.name in args.only]
    for name in ("DISTPOOL_BROKER_URL", "DISTPOOL_RESULT_URL", "DISTPOOL_QUEUE"):
        os.environ.pop(name, None)

    rows: list[dict[str, Any]] = []
    with LocalCluster(workers=PROCESSES) as cluster:
        mp = Pools("multiprocessing", lambda: multiprocessing.Pool(PROCESSES),
                   lambda: multiprocessing.Pool(PROCESSES))
        dp = Pools("distpool",
                   lambda: distpool.Pool(PROCESSES, broker=cluster.broker_url,
                                         secret=cluster.secret),
                   lambda: distpool.Pool(PROCESSES))
        with dp.attached() as pool:  # wait until the cluster's workers are up
            pool.apply(time.sleep, (0,))
        for workload in workloads:
            # Interleaved, so both kinds see the same machine load.
            mp_runs, dp_runs = [], []
            for _ in range(repeat):
                mp_runs += measure(workload, mp, size, 1)
                dp_runs += measure(workload, dp, size, 1)
            mp_median, dp_median = statistics.median(mp_runs), statistics.median(dp_runs)
            rows.append({
                "name": workload.name, "description": workload.description,
                "unit": workload.unit, "higher_is_better": workload.higher_is_better,
                "target": workload.target, "multiprocessing": mp_median,
                "distpool": dp_median, "ratio": dp_median / mp_median if mp_median else 0.0,
                "cost": workload.cost(mp_median, dp_median),
                "runs": {"multiprocessing": mp_runs, "distpool": dp_runs},
            })
            print(f"{workload.name}: multiprocessing {mp_median:.4g} {workload.unit}, "
                  f"distpool {dp_median:.4g} {workload.unit}", file=sys.stderr)

    taken = (f"{time.strftime('%Y-%m-%d')}, {machine()}, "
             f"{'quick' if args.quick else f'median of {repeat}'}")
    print(f"\nTaken {taken}\n")
    print(table(rows))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(
        {"taken": taken, "size": size, "repeat": repeat, "workloads": rows}, indent=2) + "\n")
    chart(rows, args.output / "latest.png", f"distpool vs multiprocessing.Pool(2): {taken}")
    print(f"\nWrote {args.output / 'latest.json'} and {args.output / 'latest.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
