"""Where the time of one ``apply`` goes: its stages, and the Redis commands of each.

    python -m benchmarks.stages            # 300 sequential applies
    python -m benchmarks.stages --quick    # 30

A pool on one node of one slot runs ``apply(noop)`` again and again, while a ``MONITOR``
connection records every command Redis runs, with Redis's own timestamp and the connection
that sent it. The client's connections are this process's; every other is the worker's. Each
apply is cut into stages at the commands that mark them:

* publish: from the call to the client's ``LPUSH`` of the task message;
* the worker takes it: from the ``LPUSH`` to the worker's first command for that message
  (its ``BLMOVE`` returns, Celery hands the message over, and the transport records the
  delivery);
* claim: to the worker's claim of the message (the claim script);
* run and push the result: to the worker's push of the result record (the task ran in
  between): its ``RPUSH``, or the script that pushes only while the worker holds the claim;
* collector wake-up and delivery: from the ``RPUSH`` to ``apply()`` returning.

Each stage's median time, and the median count of commands the client and the worker sent
in it (a transaction's, or commands sent together, share one round trip; those a script runs
inside Redis are not counted), are printed and written to
``benchmarks/results/stages.json``, with the commands of the last apply. ``MONITOR`` slows
Redis down: the median apply is also measured, on the same pool, just before it starts.
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psutil
import redis

import distpool
from benchmarks.processes import Node, RedisServer
from benchmarks.run import arguments, taken
from benchmarks.workloads import noop

STAGES = ("publish", "the worker takes it", "claim", "run and push the result",
          "collector wake-up and delivery")


@dataclass
class Command:
    at: float  # Redis's clock, seconds
    client: bool  # sent by the client (else by the worker)
    name: str
    text: str


class Monitor:
    """Every command Redis runs, from a MONITOR connection, in a thread."""

    def __init__(self, url: str) -> None:
        self.lines: list[tuple[float, str, str]] = []
        self._client = redis.Redis.from_url(url)
        self._monitor = self._client.monitor().__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._stopped = False
        self._thread.start()

    def _read(self) -> None:
        for event in self._monitor.listen():
            if self._stopped:
                return
            self.lines.append((float(event["time"]), event["client_address"] + ":"
                               + str(event["client_port"]), event["command"]))

    def stop(self) -> None:
        self._stopped = True
        self._client.ping()  # one more line, for the reader to see it is stopped
        self._thread.join(5)


def client_ports() -> set[str]:
    """This process's TCP connections, as MONITOR names their far end."""
    return {f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process().net_connections("tcp")
            if c.raddr}


def stages_of(commands: list[Command], called: float, returned: float,
              ) -> tuple[list[float], list[tuple[int, int]]] | None:
    """An apply's stage durations and, for each, the commands of the client and of the
    worker; None if a mark is missing (a command logged out of the window)."""
    def first(after: float, client: bool, names: tuple[str, ...] = (),
              but: tuple[str, ...] = ()) -> Command | None:
        return next((c for c in commands if c.at >= after and c.client == client
                     and (not names or c.name in names) and c.name not in but), None)

    publish = first(called, True, ("LPUSH",))
    taken = None if publish is None else first(publish.at, False, but=("BLMOVE",))
    claim = None if taken is None else first(taken.at, False, ("EVAL", "EVALSHA"))
    # The push is an RPUSH, or the script that pushes while the message is still held.
    push = None if claim is None else next(
        (c for c in commands if c.at >= claim.at and c is not claim and not c.client
         and c.name in ("RPUSH", "EVAL", "EVALSHA")), None)
    if publish is None or taken is None or claim is None or push is None:
        return None
    marks = [called, publish.at, taken.at, claim.at, push.at, returned]
    durations = [b - a for a, b in zip(marks, marks[1:])]
    counts = []
    for start, end in zip(marks, marks[1:]):
        inside = [c for c in commands if start <= c.at < end]
        counts.append((sum(c.client for c in inside), sum(not c.client for c in inside)))
    return durations, counts


def main(argv: list[str] | None = None) -> int:
    args = arguments("benchmarks.stages", __doc__).parse_args(argv)
    calls = 30 if args.quick else 300
    server = RedisServer()
    queue, secret = f"stages-{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    node = Node(server.url, queue, 1, secret)
    windows: list[tuple[float, float]] = []
    try:
        with distpool.Pool(1, broker=server.url, queue=queue, secret=secret) as pool:
            for _ in range(20):
                pool.apply(noop)  # warm: the slot's first tasks, the pool's set-up
            unmonitored = []  # MONITOR slows Redis down: what an apply takes without it
            for _ in range(calls):
                called = time.perf_counter()
                pool.apply(noop)
                unmonitored.append(time.perf_counter() - called)
            ours = client_ports()
            monitor = Monitor(server.url)
            ours_with_monitor = client_ports()
            time.sleep(0.2)
            for _ in range(calls):
                called = time.time()
                pool.apply(noop)
                windows.append((called, time.time()))
            monitor.stop()
    finally:
        node.stop()
        server.stop()
    ignored = ours_with_monitor - ours  # the monitor's own connections
    # Commands a script runs inside Redis are logged too, from "lua": not the connections'.
    commands = [Command(at, address in ours, text.split(" ", 1)[0].strip('"').upper(), text)
                for at, address, text in monitor.lines
                if address not in ignored and not address.startswith("lua")]
    measured = [found for called, returned in windows
                if (found := stages_of([c for c in commands if called <= c.at <= returned],
                                       called, returned)) is not None]
    rows = []
    for index, stage in enumerate(STAGES):
        rows.append({
            "stage": stage,
            "median_us": statistics.median(d[index] for d, _ in measured) * 1e6,
            "client_commands": statistics.median(c[index][0] for _, c in measured),
            "worker_commands": statistics.median(c[index][1] for _, c in measured)})
    total = statistics.median(returned - called for called, returned in windows) * 1e3
    unmonitored_ms = statistics.median(unmonitored) * 1e3
    heading = taken(args.quick, 1)
    print(f"Taken {heading}; {calls} sequential apply(noop), {len(measured)} cut into "
          f"stages; median apply {total:.3f} ms while monitored, {unmonitored_ms:.3f} ms "
          "before\n")
    print("| stage | median | client's commands | worker's commands |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {row['median_us']:.0f} us | {row['client_commands']:g} | "
              f"{row['worker_commands']:g} |")
    example = [c for c in commands if windows[-1][0] <= c.at <= windows[-1][1]]
    print("\nthe last apply's commands:")
    for command in example:
        print(f"  {(command.at - windows[-1][0]) * 1e6:7.0f} us  "
              f"{'client' if command.client else 'worker'}  {command.text[:110]}")
    args.output.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"taken": heading, "calls": calls, "median_apply_ms": total,
                              "median_apply_unmonitored_ms": unmonitored_ms,
                              "stages": rows,
                              "last_apply": [[c.at - windows[-1][0], c.client, c.text[:200]]
                                             for c in example]}
    (args.output / "stages.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
