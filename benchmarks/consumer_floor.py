"""What a slot's consumer costs one ``apply``: a slot beside the floor of a bare consumer.

    python -m benchmarks.consumer_floor            # 3 rounds (--repeat N for more)
    python -m benchmarks.consumer_floor --quick    # 1 short round: checks it still runs

A slot (:mod:`distpool.worker.slots`) on Redis takes each message with a consumer of its own
(:mod:`distpool.worker.slots.intake`), which registers a Celery request for it, tells the
slot's parent what it runs, and keeps its held list's lease; with ``-E`` it takes them
through Celery's consumer instead (kombu's delivery and its record, Celery's strategy and
request, the hand-off to the task thread, the tracer, the acknowledgement back through the
event loop). Everything that runs the message is in
:class:`~distpool.worker.runner.TaskRunner`: the claim, the envelope's check, the run, and
the signed results pushed while the claim is held.

The bare consumer (:mod:`benchmarks.bare_consumer`) moves each message off the queue into a
held list, as a slot's transport does, hands it to that same runner and then drops it from
the list: nothing of Celery's or kombu's. It runs the task in its own thread ("bare") or
hands it to a second thread and waits for it, as Celery's consumer hands its tasks to the
task thread ("bare, handed off"). It is a measuring device, not a worker: it keeps none of
what a slot has (remote control and ``inspect``, time limits, put-backs on a death). The gap
between the slot and it is what the slot's consumer costs beyond the floor.

Each round measures sequential ``apply(noop)`` on multiprocessing.Pool(1), on one
``distpool worker`` node of one slot, and on each bare consumer, each of the last three with
a Redis of its own; prints the medians and their ratios to multiprocessing, and writes
``benchmarks/results/consumer_floor.json``.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import psutil

import distpool
from benchmarks.processes import Node, RedisServer
from benchmarks.run import arguments, taken
from benchmarks.workloads import noop

KINDS = ("multiprocessing", "slot", "bare", "bare, handed off")
BARE_CONSUMER = Path(__file__).with_name("bare_consumer.py")
#: How long a worker may take to run its first task, seconds.
WORKER_START_TIMEOUT = 60.0


class Measured(NamedTuple):
    """One kind's figures in one round: milliseconds per apply, and the CPU each side spent
    on it (microseconds per apply; Redis's is None for multiprocessing)."""

    ms: float
    client_us: float
    worker_us: float
    redis_us: float | None


class Served(NamedTuple):
    """A pool, the processes that serve it (their children too) and its Redis's, if any."""

    pool: Any
    workers: list[psutil.Process]
    redis: psutil.Process | None


@contextmanager
def distpool_pool(kind: str) -> Iterator[Served]:
    """A ``distpool.Pool(1)`` served by a worker of ``kind``, on a Redis of its own."""
    server = RedisServer()
    queue_name, secret = f"floor-{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    stop: Callable[[], None]
    if kind == "slot":
        node = Node(server.url, queue_name, 1, secret)
        worker_pid, stop = node.process.pid, node.stop
    else:
        # Run by its path, from elsewhere: a process that has imported the benchmarks package
        # cannot take the bundle of it that the tasks ship (as a slot could not).
        process = subprocess.Popen(
            [sys.executable, str(BARE_CONSUMER), server.url, queue_name, secret,
             "handed-off" if kind == "bare, handed off" else "inline"],
            cwd=server.directory, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        worker_pid = process.pid

        def stop() -> None:
            process.kill()
            process.wait()
    try:
        with distpool.Pool(1, broker=server.url, queue=queue_name, secret=secret) as pool:
            yield Served(pool, [psutil.Process(worker_pid)], psutil.Process(server.process.pid))
    finally:
        stop()
        server.stop()


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def sequential_apply(served: Served, seconds: float) -> Measured:
    """``apply(noop)`` over about ``seconds`` of calls after a warm-up: its time, and the CPU
    of the client, of the worker's processes and of Redis."""
    pool = served.pool
    # The first call waits for the worker to come up, and fails if it never does, rather
    # than leave the benchmark (and CI) waiting for it.
    pool.apply_async(noop).get(timeout=WORKER_START_TIMEOUT)
    for _ in range(200):
        pool.apply(noop)  # warm: the worker's first tasks, the pool's set-up
    client = [psutil.Process()]
    workers = [child for worker in served.workers
               for child in (worker, *worker.children(recursive=True))]
    redis = [] if served.redis is None else [served.redis]
    before = [cpu_seconds(side) for side in (client, workers, redis)]
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        pool.apply(noop)
        calls += 1
    elapsed = time.perf_counter() - started
    client_us, worker_us, redis_us = (
        (cpu_seconds(side) - was) / calls * 1e6
        for side, was in zip((client, workers, redis), before))
    return Measured(elapsed / calls * 1000, client_us, worker_us,
                    None if served.redis is None else redis_us)


def measure(kind: str, seconds: float) -> Measured:
    if kind == "multiprocessing":
        with multiprocessing.Pool(1) as pool:
            workers = [psutil.Process(child.pid) for child in multiprocessing.active_children()]
            return sequential_apply(Served(pool, workers, None), seconds)
    with distpool_pool(kind) as served:
        return sequential_apply(served, seconds)


def medians_of(rounds: list[Measured]) -> dict[str, float | None]:
    """Each figure's median over the rounds; None for one a kind has not (multiprocessing's
    Redis)."""
    return {field: None if None in column else statistics.median(column)
            for field, column in zip(Measured._fields, zip(*rounds))}


def main(argv: list[str] | None = None) -> int:
    args = arguments("benchmarks.consumer_floor", __doc__).parse_args(argv)
    rounds, seconds = (1, 0.5) if args.quick else (args.repeat, 6.0)
    rounds_measured: dict[str, list[Measured]] = {kind: [] for kind in KINDS}
    for round_index in range(rounds):
        # A rotating order: the machine's speed drifts within a round too.
        shift = round_index % len(KINDS)
        for kind in KINDS[shift:] + KINDS[:shift]:
            rounds_measured[kind].append(measure(kind, seconds))
        print(f"  {round_index + 1}/{rounds}: " + ", ".join(
            f"{kind} {values[-1].ms:.3f} ms" for kind, values in rounds_measured.items()),
            file=sys.stderr)
    medians = {kind: medians_of(values) for kind, values in rounds_measured.items()}
    heading = taken(args.quick, rounds)
    print(f"\nTaken {heading}; sequential apply(noop), Pool(1) on one worker process; "
          "CPU in us per apply\n")
    print("| worker | ms per apply | / multiprocessing | client CPU | worker CPU | Redis CPU |")
    print("|---|---|---|---|---|---|")
    base = medians["multiprocessing"]["ms"]
    for kind, median in medians.items():
        redis = "" if median["redis_us"] is None else f"{median['redis_us']:.0f}"
        print(f"| {kind} | {median['ms']:.3f} | {median['ms'] / base:.2f} | "
              f"{median['client_us']:.0f} | {median['worker_us']:.0f} | {redis} |")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "consumer_floor.json").write_text(json.dumps(
        {"taken": heading, "medians": medians,
         "rounds": {kind: [m._asdict() for m in values]
                    for kind, values in rounds_measured.items()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
