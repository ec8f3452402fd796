"""Scale: N worker nodes of M slots on one machine, and what each slot and node costs.

    python -m benchmarks.scale --nodes 4 --slots 16          # 64 slots: results/scale.json, .png
    python -m benchmarks.scale --nodes 2 --slots 3 --quick   # small workloads, no files written

A private Redis (the broker) and N ``distpool worker`` nodes of M slots, each node in a session
of its own. The tasks sleep, so the machine's cores are not what limits them. Measured:

start         seconds from starting the nodes until all N x M slots are registered, and the CPU
              each slot process (and each node's parent) had spent by then
memory        PSS of each slot and each parent, idle: after the start, and after the workloads
connections   Redis connections held by each slot and parent (sampled every 0.1 s throughout),
              and the most clients the Redis server saw at once
idle traffic  commands Redis served per idle slot per second, over 10 s of idleness 8 s
              after a first wave of tasks (the benchmark's own INFO calls left out)
makespan      about 4 uneven sleeps per slot (0.2 to 3 s, seeded) through imap_unordered with
              chunksize=1, against the greedy list schedule of the same tasks on N x M slots;
              the gaps between one task's end and the next one's start on each slot
dispatch      20 tasks of 50 ms per slot (map, chunksize=1): tasks/s against N x M / 0.05
terminate     2 tasks of 60 s per slot, every slot busy, then ``pool.terminate()``: seconds
              until no task heartbeats (targets: 2 s) and until every slot serves a wave of
              tasks of a new pool again (30 s), and the CPU the nodes spent meanwhile
node kill     the makespan workload again; when 30% of its results are in, one node's whole
              process group (parent and slots) is SIGKILLed: every result must come back
              exactly once; its makespan against the one without the kill

Tasks record themselves in a second private Redis, so that their own connections and
commands do not count as distpool's.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# The slots import this package for their tasks (``benchmarks.scale.tasks``): the rest of the
# benchmark is imported only when it is used, inside ``run()`` and by ``__getattr__``, so that
# it adds nothing to the slots' memory.
_EXPORTS = {"chart": "report", "table": "report", "greedy_makespan": "phases",
            "durations": "phases"}


def __getattr__(name: str) -> Any:
    """``chart``, ``table``, ``greedy_makespan`` and ``durations``, from their modules."""
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(nodes: int, slots: int, secret: str | None = None, quick: bool = False,
        worker_lost_timeout: float | None = None, seed: int = 16) -> dict[str, Any]:
    """Run every phase once; return the figures."""
    import secrets
    import time

    import distpool
    from benchmarks.scale.cluster import QUEUE, cluster
    from benchmarks.scale.phases import (
        all_serve,
        durations,
        measure_dispatch,
        measure_makespan,
        measure_memory,
        measure_node_kill,
        measure_start,
        measure_terminate,
    )
    from benchmarks.scale.sampling import Sampler, measure_idle_traffic

    total = nodes * slots
    secret = secret or secrets.token_hex(32)
    per_slot, settle, idle_s, dispatch_per_slot = (2, 2.0, 3.0, 5) if quick else (4, 8.0, 10.0, 20)
    tasks = durations(per_slot * total, seed)
    figures: dict[str, Any] = {"nodes": nodes, "slots_per_node": slots, "slots": total,
                               "quick": quick, "seed": seed,
                               "worker_lost_timeout_s": worker_lost_timeout}
    with cluster(nodes, slots, secret, worker_lost_timeout) as (broker, records, running):
        sampler = Sampler(broker, lambda: list(running))
        sampler.start()
        try:
            sampler.phase("start")
            figures["start"] = measure_start(running, broker, total)
            figures["memory"] = {"after_start": measure_memory(running)}
            sampler.phase("first wave")
            with distpool.Pool(total, broker=broker.url, queue=QUEUE, secret=secret) as pool:
                served, _ = all_serve(pool, total, time.monotonic() + 120)
                if served != served:
                    raise RuntimeError(f"the {total} slots never all served one wave")
            sampler.phase("idle")
            # The pool's last words, and the connection each slot opens a few seconds after
            # its first task: one-time, not idle traffic.
            time.sleep(settle)
            figures["idle_traffic"] = measure_idle_traffic(sampler, total, idle_s)
            with distpool.Pool(total, broker=broker.url, queue=QUEUE, secret=secret) as pool:
                sampler.phase("makespan")
                figures["makespan"] = measure_makespan(pool, tasks, total)
                sampler.phase("dispatch")
                figures["dispatch"] = measure_dispatch(pool, total, dispatch_per_slot)
            sampler.phase("idle after workloads")
            time.sleep(2)
            figures["memory"]["after_workload"] = measure_memory(running)
            sampler.phase("terminate")
            figures["terminate"] = measure_terminate(running, broker, records, secret, total)
            if nodes > 1:
                sampler.phase("node kill")
                with distpool.Pool(total, broker=broker.url, queue=QUEUE,
                                   secret=secret) as pool:
                    figures["node_kill"] = measure_node_kill(
                        pool, running, tasks, figures["makespan"]["makespan_s"])
            else:
                figures["node_kill"] = None
            sampler.phase("end")
        finally:
            sampler.stop()
        figures["connections"] = {"max_per_slot": sampler.per_slot,
                                  "max_per_parent": sampler.per_parent,
                                  "server_peak": sampler.server_peak,
                                  "by_phase": sampler.by_phase}
        start = sampler.timeline[0][0] if sampler.timeline else 0.0
        figures["timeline"] = {
            "connected_clients": [(round(at - start, 2), n) for at, n in sampler.timeline],
            "phases": [(round(at - start, 2), name) for at, name in sampler.phases]}
    return figures
