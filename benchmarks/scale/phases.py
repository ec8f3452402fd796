"""The phases of a scale run, each measured against the running nodes and a pool: the start,
memory, makespan, dispatch, terminate and node kill; and the workloads they run."""

from __future__ import annotations

import heapq
import os
import random
import threading
import time
from collections import Counter
from typing import Any

import distpool
from benchmarks.processes import Node, RedisServer
from benchmarks.scale.cluster import QUEUE
from benchmarks.scale.sampling import cpu_seconds, node_cpu_seconds, pss_mb, spread
from benchmarks.scale.tasks import BEAT, beating_sleep, sleep_task

TERMINATE_TARGET_S = 2.0
RECOVERY_TARGET_S = 30.0


def durations(count: int, seed: int) -> list[float]:
    """``count`` uneven durations: lognormal around 0.7 s, kept between 0.2 and 3 s."""
    rng = random.Random(seed)
    return [round(min(3.0, max(0.2, rng.lognormvariate(-0.35, 0.6))), 3) for _ in range(count)]


def greedy_makespan(tasks: list[float], slots: int) -> float:
    """Each task, in submission order, to the slot that frees first."""
    free_at = [0.0] * slots
    for duration in tasks:
        heapq.heappush(free_at, heapq.heappop(free_at) + duration)
    return max(free_at)


def measure_start(nodes: list[Node], broker: RedisServer, total: int,
                  timeout: float = 300.0) -> dict[str, Any]:
    """Wait until ``total`` slots are registered; the time since the nodes started, and the
    CPU each slot and parent had spent by then."""
    from distpool.store.redis_store import RedisStore

    store = RedisStore(broker.url)
    started = time.monotonic()
    try:
        while (registered := store.worker_slots(QUEUE)) < total:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"only {registered} of {total} slots registered "
                                   f"after {timeout:g} s")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        store.close()
    slots = [cpu_seconds(pid) * 1000 for node in nodes for pid in node.slot_pids()]
    parents = [cpu_seconds(node.process.pid) * 1000 for node in nodes]
    return {"all_registered_s": round(elapsed, 2), "slot_cpu_ms": spread(slots, 0),
            "parent_cpu_ms": spread(parents, 0)}


def measure_memory(nodes: list[Node]) -> dict[str, Any]:
    slots = [pss_mb(pid) for node in nodes for pid in node.slot_pids()]
    parents = [pss_mb(node.process.pid) for node in nodes]
    return {"slot_pss_mb": spread([m for m in slots if m is not None]),
            "parent_pss_mb": spread([m for m in parents if m is not None])}


def all_serve(pool: Any, total: int, deadline: float, seconds: float = 1.0) -> tuple[float, int]:
    """Waves of ``total`` tasks of ``seconds`` until one is served by ``total`` distinct slot
    processes (a slot that does not serve leaves its task to another, which runs two) or
    ``deadline`` (monotonic) passes. Returns when (``time.time()``) the last slot of that wave
    started its task, and the waves sent; ``nan`` if none was."""
    waves = 0
    while time.monotonic() < deadline:
        waves += 1
        results = pool.map_async(sleep_task, [(i, seconds) for i in range(total)], chunksize=1)
        try:
            runs = results.get(timeout=max(1.0, deadline - time.monotonic()) + 5 * seconds)
        except distpool.TimeoutError:
            break
        if len({pid for _, pid, _, _ in runs}) == total:
            return max(started for _, _, started, _ in runs), waves
    return float("nan"), waves


def measure_makespan(pool: Any, tasks: list[float], total: int) -> dict[str, Any]:
    submitted = time.time()
    started = time.monotonic()
    runs = list(pool.imap_unordered(sleep_task, list(enumerate(tasks)), chunksize=1))
    elapsed = time.monotonic() - started
    greedy = greedy_makespan(tasks, total)
    by_slot: dict[int, list[tuple[float, float]]] = {}
    for _, pid, began, ended in runs:
        by_slot.setdefault(pid, []).append((began, ended))
    gaps = [(later[0] - earlier[1]) * 1000 for spans in by_slot.values()
            for earlier, later in zip(sorted(spans), sorted(spans)[1:])]
    return {"tasks": len(tasks), "work_s": round(sum(tasks), 1), "greedy_s": round(greedy, 2),
            "makespan_s": round(elapsed, 2), "over_greedy": round(elapsed / greedy, 3),
            "first_start_ms": round((min(r[2] for r in runs) - submitted) * 1000, 1),
            "slots_used": len(by_slot), "slot_gap_ms": spread(gaps)}


def measure_dispatch(pool: Any, total: int, per_slot: int, seconds: float = 0.05
                     ) -> dict[str, Any]:
    count = total * per_slot
    started = time.monotonic()
    pool.map(sleep_task, [(i, seconds) for i in range(count)], chunksize=1)
    elapsed = time.monotonic() - started
    ideal = total / seconds
    return {"tasks": count, "task_s": seconds, "elapsed_s": round(elapsed, 2),
            "tasks_per_s": round(count / elapsed, 1), "ideal_per_s": round(ideal, 1),
            "of_ideal": round(count / elapsed / ideal, 3)}


def measure_terminate(nodes: list[Node], broker: RedisServer, records: RedisServer,
                      secret: str, total: int) -> dict[str, Any]:
    """Every slot busy with a 60 s task, then ``terminate()``: until no task heartbeats, and
    until a new pool's wave is served by every slot."""
    records.client.delete(BEAT)
    pool = distpool.Pool(total, broker=broker.url, queue=QUEUE, secret=secret)
    try:
        pool.map_async(beating_sleep, [(60.0, records.url)] * (2 * total), chunksize=1)
        busy_by = time.monotonic() + 120
        while len(beating(records, time.time() - 0.5)) < total:
            if time.monotonic() > busy_by:
                raise RuntimeError(f"only {len(beating(records, time.time() - 0.5))} of "
                                   f"{total} slots busy after 120 s")
            time.sleep(0.05)
        cpu_before = sum(node_cpu_seconds(node) for node in nodes)
        load_before = os.getloadavg()[0]
        terminated = time.time()
        pool.terminate()
        call = time.time() - terminated
    except BaseException:
        pool.terminate()
        raise
    watch: dict[str, Any] = {}
    watcher = threading.Thread(target=_watch_beats, args=(records, terminated, watch))
    watcher.start()
    with distpool.Pool(total, broker=broker.url, queue=QUEUE, secret=secret) as again:
        served, waves = all_serve(again, total, time.monotonic() + 120)
    window = time.time() - terminated
    cpu = sum(node_cpu_seconds(node) for node in nodes) - cpu_before
    watcher.join()
    serving_again = served - terminated
    return {
        "tasks": 2 * total, "terminate_call_s": round(call, 2),
        "tasks_stopped_s": watch["stopped_s"], "still_beating_after_2s": watch["late"],
        "serving_again_s": None if serving_again != serving_again else round(serving_again, 2),
        "waves": waves, "window_s": round(window, 1), "node_cpu_s": round(cpu, 1),
        "loadavg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "targets_s": {"tasks_stopped": TERMINATE_TARGET_S, "serving_again": RECOVERY_TARGET_S},
    }


def beating(records: RedisServer, since: float) -> dict[str, float]:
    """pid -> last heartbeat, of the tasks that beat after ``since``."""
    beats = {pid.decode(): float(at) for pid, at in records.client.hgetall(BEAT).items()}
    return {pid: at for pid, at in beats.items() if at > since}


def _watch_beats(records: RedisServer, terminated: float, into: dict[str, Any],
                 quiet: float = 1.0, timeout: float = 75.0) -> None:
    """Until no heartbeat for ``quiet`` s: when the last one came, after ``terminated``."""
    while True:
        last = max(beating(records, 0).values(), default=terminated)
        if time.time() - last > quiet or time.time() - terminated > timeout:
            break
        time.sleep(0.05)
    late = beating(records, terminated + TERMINATE_TARGET_S)
    into["stopped_s"] = round(max(0.0, last - terminated), 2)
    into["late"] = len(late)


def measure_node_kill(pool: Any, nodes: list[Node], tasks: list[float], without: float,
                      at: float = 0.3, stall: float = 180.0) -> dict[str, Any]:
    """The makespan workload again, SIGKILLing the last node when ``at`` of its results are
    in; every result must come back exactly once."""
    seen: Counter[int] = Counter()
    victim = nodes[-1]
    killed_slots = 0
    killed_at = None
    started = time.monotonic()
    results = pool.imap_unordered(sleep_task, list(enumerate(tasks)), chunksize=1)
    stalled = False
    try:
        while True:
            index, *_ = results.next(timeout=stall)
            seen[index] += 1
            if killed_at is None and sum(seen.values()) >= at * len(tasks):
                killed_slots = len(victim.slot_pids())
                victim.kill()
                killed_at = time.monotonic() - started
    except StopIteration:
        pass
    except distpool.TimeoutError:
        stalled = True
    elapsed = time.monotonic() - started
    return {
        "tasks": len(tasks), "killed_at_s": None if killed_at is None else round(killed_at, 2),
        "killed_slots": killed_slots, "stalled": stalled,
        "lost": sum(1 for i in range(len(tasks)) if seen[i] == 0),
        "duplicated": sum(1 for i in range(len(tasks)) if seen[i] > 1),
        "completed": not stalled and all(seen[i] == 1 for i in range(len(tasks))),
        "makespan_s": round(elapsed, 2), "without_kill_s": round(without, 2),
        "extra_s": round(elapsed - without, 2),
    }
