"""What the scale benchmark reads off the processes and the broker: the sampler of Redis
connections, each process's CPU and memory, and the broker's idle traffic."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from benchmarks.processes import Node, RedisServer

SAMPLE_INTERVAL = 0.1
MB = 1024 * 1024


class Sampler:
    """A thread that, every ``SAMPLE_INTERVAL``, counts each node process's connections to
    the broker and the clients the broker sees; it keeps the maxima and a timeline."""

    def __init__(self, broker: RedisServer, nodes: Callable[[], list[Node]]) -> None:
        self._broker, self._nodes = broker, nodes
        self._client = redis.Redis.from_url(broker.url)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.info_calls = 0  # this sampler's INFO commands, all told
        self.per_slot = self.per_parent = self.server_peak = 0
        self.by_phase: dict[str, dict[str, int]] = {}  # phase -> the same maxima in it
        self.timeline: list[tuple[float, int]] = []  # (monotonic time, connected clients)
        self.phases: list[tuple[float, str]] = []  # (monotonic time, phase that starts)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def phase(self, name: str) -> None:
        self.phases.append((time.monotonic(), name))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()

    def info(self, section: str) -> dict[str, Any]:
        """INFO ``section`` from the broker, counted."""
        with self._lock:
            self.info_calls += 1
            return self._client.info(section)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            nodes = [(node.process.pid, node.slot_pids()) for node in self._nodes()]
            held = redis_connections([pid for parent, slots in nodes for pid in (parent, *slots)],
                                     self._broker.port)
            clients = int(self.info("clients")["connected_clients"])
            self.timeline.append((time.monotonic(), clients))
            slot = max((held.get(pid, 0) for _, slots in nodes for pid in slots), default=0)
            parent = max((held.get(pid, 0) for pid, _ in nodes), default=0)
            self.server_peak = max(self.server_peak, clients)
            self.per_slot, self.per_parent = max(self.per_slot, slot), max(self.per_parent, parent)
            if self.phases:
                most = self.by_phase.setdefault(
                    self.phases[-1][1], {"per_slot": 0, "per_parent": 0, "server": 0})
                most["per_slot"] = max(most["per_slot"], slot)
                most["per_parent"] = max(most["per_parent"], parent)
                most["server"] = max(most["server"], clients)


def redis_connections(pids: list[int], port: int) -> dict[int, int]:
    """pid -> its TCP connections whose remote port is ``port``: what psutil's
    ``net_connections("tcp")`` reports, read from /proc for these processes only (psutil
    reads every process's, 30 ms a time on this machine, too much every 0.1 s)."""
    remote = f":{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[2].endswith(remote) and fields[3] == "01":  # ESTABLISHED
                        inodes.add(fields[9])
        except FileNotFoundError:
            continue
    held = {}
    for pid in pids:
        count = 0
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        held[pid] = count
    return held


def node_cpu_seconds(node: Node) -> float:
    """CPU ``node`` has spent: its parent, its live slots, and the slots it reaped."""
    import psutil

    try:
        times = psutil.Process(node.process.pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return (times.user + times.system + times.children_user + times.children_system
            + sum(cpu_seconds(pid) for pid in node.slot_pids()))


def cpu_seconds(pid: int) -> float:
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def pss_mb(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).memory_full_info().pss / MB
    except psutil.NoSuchProcess:
        return None


def spread(values: list[float], digits: int = 1) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "max": None}
    return {"mean": round(statistics.fmean(values), digits), "max": round(max(values), digits)}


def measure_idle_traffic(sampler: Sampler, total: int, seconds: float) -> dict[str, Any]:
    """Commands Redis served per slot per second while nothing runs, less this benchmark's
    INFO calls (its sampler's, and the two that read the counts)."""
    before_calls = sampler.info_calls
    before = sampler.info("commandstats")
    time.sleep(seconds)
    after = sampler.info("commandstats")
    ours = sampler.info_calls - before_calls - 1  # the last one is not in its own counts
    calls = {name[len("cmdstat_"):]: stats["calls"] - before.get(name, {"calls": 0})["calls"]
             for name, stats in after.items()}
    calls["info"] = calls.get("info", 0) - ours
    calls = {name: count for name, count in calls.items() if count > 0}
    commands = sum(calls.values())
    return {"seconds": seconds, "commands": commands,
            "per_slot_per_s": round(commands / total / seconds, 3),
            "by_command": dict(sorted(calls.items(), key=lambda item: -item[1]))}
