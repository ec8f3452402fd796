"""Run every workload (:mod:`benchmarks.workloads`, then the data-heavy ones of
:mod:`benchmarks.data`) against multiprocessing.Pool(2) and distpool.Pool(2), in one run,
and for comparison against hand-written Celery + Redis, and Ray's Pool when Ray is installed.

    python -m benchmarks.run                  # 3 repetitions, full size
    python -m benchmarks.run --quick          # 1 repetition, small sizes (CI)

distpool runs on a local cluster with 2 worker processes: started once for the workloads
that attach to running workers, and afresh (``Pool(2)`` with no broker) for the start-up
one. The Celery column (:mod:`benchmarks.celery_baseline`) uses that cluster's Redis and a
``celery worker -c 2`` of its own; the Ray column (:mod:`benchmarks.ray_baseline`), a Ray
runtime with 2 CPUs. Prints medians and ratios, and writes the raw figures (JSON) and a
chart (PNG).
"""

from __future__ import annotations

import argparse
import importlib.metadata
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
from benchmarks import celery_baseline, ray_baseline
from benchmarks.data import DATA_WORKLOADS
from benchmarks.workloads import WORKLOADS, Pools, Workload
from distpool.local.cluster import LocalCluster

PROCESSES = 2
#: The alternatives measured beside distpool, when present: kind -> column title.
COMPARISONS = {"celery": "hand-written Celery", "ray": "Ray's Pool"}
RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def taken(quick: bool, repeat: int) -> str:
    """When, on what, and how the figures were taken, for the results' heading."""
    return (f"{time.strftime('%Y-%m-%d')}, {machine()}, "
            f"{'quick' if quick else f'median of {repeat}'}")


def versions() -> dict[str, str]:
    """The versions of what the figures depend on, those installed."""
    found = {}
    for package in ("distpool", "celery", "kombu", "redis", "hiredis", "dill", "ray"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def compare(workload: Workload, kinds: list[Pools], size: float,
            repeat: int) -> dict[str, Any]:
    """Run ``workload`` on every kind of pool, interleaved so all see the same machine load;
    the first two kinds are multiprocessing and distpool, whose figures the target compares.
    A comparison that fails loses its figure for this workload, and the run goes on."""
    runs: dict[str, list[float]] = {
        pools.kind: [] for pools in kinds if workload.name not in pools.unsupported}
    failures: dict[str, str] = {}
    for _ in range(repeat):
        for pools in kinds:
            if pools.kind not in runs or pools.kind in failures:
                continue
            try:
                with pools.session():
                    runs[pools.kind].append(workload.run(pools, size))
            except Exception as error:
                if pools.kind not in COMPARISONS:
                    raise
                failures[pools.kind] = repr(error)
                print(f"{workload.name}: {pools.kind} failed: {error!r}", file=sys.stderr)
    medians = {kind: statistics.median(figures) for kind, figures in runs.items()
               if kind not in failures}
    mp, dp = medians["multiprocessing"], medians["distpool"]
    print(f"{workload.name}: " + ", ".join(
        f"{kind} {median:.4g} {workload.unit}" for kind, median in medians.items()),
        file=sys.stderr)
    return {
        "name": workload.name, "description": workload.description,
        "unit": workload.unit, "higher_is_better": workload.higher_is_better,
        "target": workload.target, "multiprocessing": mp, "distpool": dp,
        **{kind: medians.get(kind) for kind in COMPARISONS},
        "ratio": dp / mp if mp else None,  # None: multiprocessing's figure is 0
        "cost": workload.cost(mp, dp), "runs": runs, "failures": failures,
    }


def verdict(met: bool, quick: bool) -> str:
    """A target's verdict; none from a quick run, whose small sizes let fixed costs weigh
    more than the targets (set at full size) allow."""
    if quick:
        return "n/a (quick)"
    return "yes" if met else "**no**"


def table(rows: list[dict[str, Any]], quick: bool = False) -> str:
    compared = [kind for kind in COMPARISONS if any(row.get(kind) is not None for row in rows)]
    lines = ["| workload | unit | multiprocessing | distpool | distpool / mp | target | met |"
             + "".join(f" {COMPARISONS[kind]} |" for kind in compared),
             "|---|---|---|---|---|---|---|" + "---|" * len(compared)]
    for row in rows:
        others = "".join(
            " n/a |" if row.get(kind) is None else f" {row[kind]:.3g} |" for kind in compared)
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(
            f"| {row['description']} | {row['unit']} | {row['multiprocessing']:.3g} | "
            f"{row['distpool']:.3g} | {ratio} | {row['target']} | "
            f"{verdict(row['cost'] <= 1, quick)} |{others}")
    return "\n".join(lines)


def advantage(row: dict[str, Any], other: str) -> float | None:
    """How many times better distpool's figure is than ``other``'s (> 1: distpool is better)."""
    theirs = row.get(other)
    if not theirs or not row["distpool"]:
        return None
    return row["distpool"] / theirs if row["higher_is_better"] else theirs / row["distpool"]


def chart(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [kind for kind in COMPARISONS
                if any(advantage(row, kind) is not None for row in rows)]
    fig, axes = plt.subplots(1, 1 + len(compared), figsize=(9 + 5 * len(compared), 4.5),
                             squeeze=False)
    # A cost of 0 (a figure of 0, or a target that any figure meets) has no place on a log
    # scale: such rows are in the table only.
    targeted = [row for row in rows if row["cost"] > 0]
    names = [f"{row['name']}\n({row['target']})" for row in targeted]
    costs = [row["cost"] for row in targeted]
    _bars(axes[0][0], names, costs, lambda value: value <= 1,
          "distpool's figure / what its target allows\n(log; <= 1 meets the target)")
    for ax, kind in zip(axes[0][1:], compared):
        measured = [row for row in rows if advantage(row, kind) is not None]
        _bars(ax, [row["name"] for row in measured],
              [advantage(row, kind) or 0.0 for row in measured], lambda value: value >= 1,
              f"how many times better than {COMPARISONS[kind]}\n(log; > 1: distpool is better)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _bars(ax: Any, names: list[str], values: list[float], good: Any, label: str) -> None:
    from matplotlib.ticker import NullFormatter

    ax.barh(names, values, color=["#4c72b0" if good(v) else "#dd8452" for v in values])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # log-scale minor labels overlap
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.2f}", va="center", fontsize=8)


def arguments(module: str, description: str | None) -> argparse.ArgumentParser:
    """The command line every benchmark takes: ``--repeat``, ``--quick`` and ``--output``."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median is kept)")
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition at a smaller size: checks it still runs")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write results")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = arguments("benchmarks.run", __doc__)
    parser.add_argument("--only", nargs="*", help="workload names to run")
    parser.add_argument("--without-celery", action="store_true",
                        help="leave out the hand-written Celery column")
    parser.add_argument("--without-ray", action="store_true",
                        help="leave out Ray's column (measured only when Ray is installed)")
    args = parser.parse_args(argv)
    repeat, size = (1, 0.1) if args.quick else (args.repeat, 1.0)
    workloads = [w for w in (*WORKLOADS, *DATA_WORKLOADS) if not args.only or w.name in args.only]
    for name in ("DISTPOOL_BROKER_URL", "DISTPOOL_RESULT_URL", "DISTPOOL_QUEUE"):
        os.environ.pop(name, None)

    rows: list[dict[str, Any]] = []
    with LocalCluster(workers=PROCESSES) as cluster:
        kinds = [
            Pools("multiprocessing", lambda: multiprocessing.Pool(PROCESSES),
                  lambda: multiprocessing.Pool(PROCESSES),
                  new_process=("multiprocessing", {})),
            Pools("distpool",
                  lambda: distpool.Pool(PROCESSES, broker=cluster.broker_url,
                                        secret=cluster.secret),
                  lambda: distpool.Pool(PROCESSES), redis_url=cluster.broker_url,
                  new_process=("distpool", {"DISTPOOL_BROKER_URL": cluster.broker_url,
                                            "DISTPOOL_SECRET": cluster.secret})),
        ]
        with kinds[1].attached() as pool:  # wait until the cluster's workers are up
            pool.apply(time.sleep, (0,))
        if not args.without_celery:
            kinds.append(Pools(
                "celery", lambda: celery_baseline.CeleryPool(cluster.broker_url, PROCESSES),
                lambda: celery_baseline.fresh_pool(cluster.broker_url, PROCESSES),
                session=lambda: celery_baseline.running_worker(cluster.broker_url, PROCESSES),
                redis_url=cluster.broker_url,
                # Its JSON messages carry no arrays, and its workers run only the functions
                # registered in celery_baseline: none of the data workloads'.
                unsupported=frozenset({"imap_10M_memory", "first_result_new_process",
                                       *(workload.name for workload in DATA_WORKLOADS)})))
        if not args.without_ray and ray_baseline.available():
            kinds.append(Pools(
                "ray", lambda: ray_baseline.attached_pool(PROCESSES),
                lambda: ray_baseline.fresh_pool(PROCESSES),
                session=lambda: ray_baseline.running_runtime(PROCESSES),
                unsupported=frozenset({"first_result_new_process"})))
        for workload in workloads:
            rows.append(compare(workload, kinds, size, repeat))

    heading = taken(args.quick, repeat)
    print(f"\nTaken {heading}\n")
    print(table(rows, args.quick))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(
        {"taken": heading, "versions": versions(), "size": size, "repeat": repeat,
         "workloads": rows}, indent=2) + "\n")
    chart(rows, args.output / "latest.png",
          f"distpool.Pool(2) on 2 local worker processes: {heading}")
    print(f"\nWrote {args.output / 'latest.json'} and {args.output / 'latest.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
