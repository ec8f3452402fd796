"""``distpool demo``: the same job on multiprocessing.Pool, then on distpool.Pool.

The job is shaped like our users' outage forecast: a few dozen task objects of uneven
duration, each running a small Monte Carlo simulation of its own, executed through an
``execute()`` method. ``distpool demo`` runs this module as ``__main__``, like a user's
script, so its task class travels to the workers by value, not by import.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

#: Simulation steps of an average task at --scale 1: about half a second on our machines.
STEPS_PER_TASK = 2_500_000


class OutageSimulation:
    """One scenario: how many simulated hours see more failed lines than the grid tolerates."""

    def __init__(self, index: int, steps: int, failure_rate: float, seed: int) -> None:
        self.index = index
        self.steps = steps
        self.failure_rate = failure_rate
        self.seed = seed

    def execute(self) -> tuple[int, int]:
        rng = random.Random(self.seed)
        outages = 0
        failed = 0
        for _ in range(self.steps):
            if rng.random() < self.failure_rate:
                failed += 1
            elif failed and rng.random() < 0.3:
                failed -= 1
            if failed > 3:
                outages += 1
        return self.index, outages


def run_task(task: OutageSimulation) -> tuple[int, int]:
    return task.execute()


def make_tasks(count: int, scale: float, seed: int) -> list[OutageSimulation]:
    rng = random.Random(seed)
    return [
        OutageSimulation(i, max(1, int(STEPS_PER_TASK * scale * rng.uniform(0.2, 1.8))),
                         failure_rate=rng.uniform(0.05, 0.2), seed=rng.randrange(2**32))
        for i in range(count)
    ]


def run(pool_type: Any, tasks: list[OutageSimulation], processes: int, label: str
        ) -> tuple[float, list[tuple[int, int]]]:
    """Run the tasks on a pool of ``pool_type``, with a progress bar; (seconds, results)."""
    from tqdm import tqdm

    started = time.perf_counter()
    with pool_type(processes) as pool:
        results = []
        with tqdm(total=len(tasks), desc=label, unit="task", file=sys.stderr) as bar:
            for result in pool.imap_unordered(run_task, tasks):
                results.append(result)
                bar.update()
    return time.perf_counter() - started, sorted(results)


def main(argv: Sequence[str] | None = None) -> int:
    import distpool

    parser = argparse.ArgumentParser(
        prog="distpool demo",
        description="Run a forecast-shaped job on multiprocessing.Pool, then on distpool.Pool "
                    "(a private local cluster unless DISTPOOL_BROKER_URL is set), and compare.")
    parser.add_argument("--tasks", type=int, default=36, help="number of tasks (default 36)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="task duration factor (default 1.0: about 0.5 s a task)")
    parser.add_argument("--processes", type=int, default=None,
                        help="pool processes (default: CPU count)")
    parser.add_argument("--seed", type=int, default=2026, help="workload seed")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.scale <= 0:
        parser.error("--tasks and --scale must be positive")
    processes = args.processes or multiprocessing.cpu_count()
    tasks = make_tasks(args.tasks, args.scale, args.seed)

    print(f"{len(tasks)} simulations of uneven length on {processes} processes")
    mp_seconds, mp_results = run(multiprocessing.Pool, tasks, processes, "multiprocessing")
    dp_seconds, dp_results = run(distpool.Pool, tasks, processes, "distpool       ")
    agree = mp_results == dp_results
    print(f"multiprocessing.Pool: {mp_seconds:6.2f} s")
    print(f"distpool.Pool:        {dp_seconds:6.2f} s  ({dp_seconds / mp_seconds:.2f} x, "
          "including the local cluster's start)")
    print(f"results agree: {'yes' if agree else 'NO'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
