"""The two latency-bound figures, this checkout beside an earlier revision, in one run.

    python -m benchmarks.versus --base main~5       # 5 repetitions
    python -m benchmarks.versus --base v0.1 --repeat 9

Sequential ``apply(noop)`` and ``map(square, range(100_000))`` depend on every microsecond
of the path of a task, and this machine's speed changes from hour to hour: a figure is only
worth comparing with one taken beside it. Each repetition measures, in a rotating order,
multiprocessing.Pool(2), distpool.Pool(2) of the base revision (its tree, exported by
``git archive``) and distpool.Pool(2) of this checkout, each in a new interpreter with its own
local cluster (so that neither inherits the other's warm caches or processes). Prints the
medians and ratios, and writes ``benchmarks/results/versus.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from benchmarks.run import RESULTS, taken
from benchmarks.workloads import Pools, map_square, sequential_apply

REPOSITORY = Path(__file__).resolve().parent.parent
PROCESSES = 2
#: What each measurement runs: name -> (workload, its size factor, runs kept as a median).
MEASURED = {"apply_sequential_ms": (sequential_apply, 2.0, 3),
            "map_100k_ms": (map_square, 1.0, 3)}


def measure(kind: str) -> dict[str, float]:
    """Every figure of :data:`MEASURED`, on one pool of ``kind``, warmed first."""
    if kind == "multiprocessing":
        pool: Any = multiprocessing.Pool(PROCESSES)
    else:
        import distpool  # the one PYTHONPATH names first: this checkout's, or the base's
        print(f"distpool from {Path(distpool.__file__).parent}", file=sys.stderr)
        pool = distpool.Pool(PROCESSES)
    with pool:
        pools = Pools(kind, attached=lambda: nullcontext(pool), fresh=lambda: None)
        map_square(pools, 0.1)  # warm: slots' first tasks, the collector, the caches
        return {name: statistics.median(workload(pools, size) for _ in range(runs))
                for name, (workload, size, runs) in MEASURED.items()}


def export(revision: str, into: Path) -> Path:
    """The package of ``revision`` (its ``distpool`` folder only), as files under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", revision, "distpool"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into)
    return into


def run_measure(kind: str, tree: Path | None) -> dict[str, float]:
    """:func:`measure` in a new interpreter (and its workers), whose ``distpool`` is that of
    ``tree`` (a folder holding one): the benchmark's own modules still come from this
    checkout."""
    tree = tree or REPOSITORY
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tree), str(REPOSITORY), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    completed = subprocess.run(  # run from the tree: ``-m`` puts the directory first
        [sys.executable, "-m", "benchmarks.versus", "--measure", kind], cwd=tree,
        env=environment, capture_output=True, text=True, timeout=600)
    if completed.returncode:
        raise RuntimeError(f"measuring {kind} failed:\n{completed.stderr[-3000:]}")
    if kind == "distpool" and f"distpool from {tree / 'distpool'}" not in completed.stderr:
        raise RuntimeError(f"the measurement did not import distpool from {tree}:\n"
                           f"{completed.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(completed.stdout.splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("benchmarks.versus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD", help="the revision to compare with")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (median is kept)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # a child's: one measurement
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    with tempfile.TemporaryDirectory(prefix="distpool-versus-") as directory:
        base = export(args.base, Path(directory))
        variants: dict[str, tuple[str, Path | None]] = {
            "multiprocessing": ("multiprocessing", None),
            f"base ({args.base})": ("distpool", base),
            "this checkout": ("distpool", None)}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        names = list(variants)
        for repetition in range(args.repeat):
            for name in names[repetition % 3:] + names[:repetition % 3]:
                runs[name].append(run_measure(*variants[name]))
                print(f"  {repetition + 1}/{args.repeat} {name}: {runs[name][-1]}",
                      file=sys.stderr)
    medians = {name: {figure: statistics.median(run[figure] for run in figures)
                      for figure in MEASURED} for name, figures in runs.items()}
    heading = taken(False, args.repeat)
    print(f"\nTaken {heading}\n")
    print("| figure | " + " | ".join(names) + " | base / mp | this / mp | this / base |")
    print("|---|" + "---|" * (len(names) + 3))
    for figure in MEASURED:
        mp, old, new = (medians[name][figure] for name in names)
        print(f"| {figure} | {mp:.3f} | {old:.3f} | {new:.3f} | {old / mp:.2f} | "
              f"{new / mp:.2f} | {new / old:.2f} |")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "versus.json").write_text(json.dumps(
        {"taken": heading, "base": args.base, "medians": medians, "runs": runs},
        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
