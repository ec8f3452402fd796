"""The ``distpool`` command (also ``python -m distpool``): it parses the options of each
subcommand and calls the code that does the work; ``distpool worker`` calls
:func:`distpool.worker.node.run`, which chooses the process model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import runpy
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, config, platform
from .errors import DistpoolError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, passthrough = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "worker":
        return _worker(args, passthrough)
    if args.command == "demo":
        return _demo(passthrough)
    if passthrough:
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    if args.command == "status":
        return _status(args)
    if args.command == "checkpoints":
        return _checkpoints(args)
    return _cluster(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distpool",
        description="multiprocessing.Pool on a cluster of Celery workers: run workers, a local "
                    "cluster, the demo, or look at a cluster's status.")
    parser.add_argument("--version", action="version", version=f"distpool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    worker = commands.add_parser(
        "worker",
        help="run a worker that serves distpool pools",
        description="Run Celery workers that serve distpool pools: by default one worker "
                    "process per slot, each running one task at a time, under one parent "
                    "that replaces them. Options not listed here are passed to 'celery "
                    "worker' unchanged (for example -E to send events for Flower).",
    )
    worker.add_argument("--broker", metavar="URL",
                        help="broker URL (default: $DISTPOOL_BROKER_URL, else "
                             f"{config.DEFAULT_BROKER_URL})")
    worker.add_argument("--result-url", metavar="URL",
                        help="Redis URL for results (default: $DISTPOOL_RESULT_URL, else the "
                             "broker when it is Redis)")
    worker.add_argument("--queue", "-Q", metavar="NAME",
                        help=f"queue to serve (default: $DISTPOOL_QUEUE, else "
                             f"{config.DEFAULT_QUEUE})")
    worker.add_argument("--concurrency", "-c", type=_positive_int, metavar="N",
                        default=os.cpu_count() or 1,
                        help="worker processes, each running one task at a time "
                             "(default: CPU count)")
    worker.add_argument("--name", "-n", metavar="NAME",
                        help="node name (default: distpool-<pid>@<host>)")
    worker.add_argument("--loglevel", "-l", type=_log_level, default="WARNING", metavar="LEVEL",
                        help="log level of the worker processes and of their parent "
                             "(default: WARNING)")
    worker.add_argument("--secret-file", metavar="PATH",
                        help="file holding the key shared with the clients (default: "
                             "$DISTPOOL_SECRET, else the file $DISTPOOL_SECRET_FILE)")
    worker.add_argument("--insecure", action="store_true", default=None,
                        help="run tasks that are not signed: only on a network you trust "
                             "completely")
    worker.add_argument("--pool", "-P", metavar="POOL",
                        help="process model: by default (or 'solo', its earlier name) one "
                             "worker process per slot; a Celery pool ('prefork', 'threads', "
                             "...) runs Celery's own worker instead")
    worker.add_argument("--stop-timeout", type=_seconds, default=config.DEFAULT_STOP_TIMEOUT,
                        metavar="SECONDS",
                        help="when the worker is stopped (SIGTERM, Ctrl-C, Ctrl-Break), how "
                             "long running tasks get to finish before they are killed and put "
                             "back on the queue (default: %(default)g)")
    worker.add_argument("--worker-lost-timeout", type=float, metavar="SECONDS",
                        help="on a Redis broker, how soon the tasks of a dead worker node go to "
                             "other workers (default: $DISTPOOL_WORKER_LOST_TIMEOUT, else "
                             f"{config.DEFAULT_WORKER_LOST_TIMEOUT:g})")
    cluster = commands.add_parser(
        "cluster", help="run a local cluster (Redis and workers) in the foreground",
        description="Run a private Redis server and local workers until Ctrl-C, and print the "
                    "broker URL that pools and 'distpool worker' can use.")
    cluster.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                         metavar="N", help="worker processes (default: CPU count)")
    status = commands.add_parser(
        "status", help="show the nodes, the queue and the pools with work in flight",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show the worker nodes serving the queue (slots, busy slots), its depth, "
                    "and the pools with work in flight\nand their progress. Exits 1 when no "
                    "node is alive, 2 when Redis or the broker cannot be reached.",
        epilog=STATUS_JSON)
    status.add_argument("--broker", metavar="URL", help="as for 'distpool worker'")
    status.add_argument("--result-url", metavar="URL", help="as for 'distpool worker'")
    status.add_argument("--queue", "-Q", metavar="NAME", help="as for 'distpool worker'")
    status.add_argument("--slots", action="store_true",
                        help="also show each slot: its pid, state, and the message it runs")
    status.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for Redis and the broker (default 5)")
    status.add_argument("--json", action="store_true",
                        help="print JSON, for scripts (its shape is below)")
    checkpoints = commands.add_parser(
        "checkpoints", help="list the journals of named runs, or remove one",
        description="List the journals of named runs (Pool(checkpoint=NAME), "
                    "DISTPOOL_CHECKPOINT), with their progress; 'rm NAME' removes one, so "
                    "that the run starts afresh.")
    checkpoints.add_argument("action", nargs="?", choices=["rm"], help="remove NAME's journal")
    checkpoints.add_argument("name", nargs="?", metavar="NAME")
    checkpoints.add_argument("--dir", metavar="PATH",
                             help="where the journals are (default: $DISTPOOL_CHECKPOINT_DIR, "
                                  "else .distpool)")
    commands.add_parser(
        "demo", add_help=False,
        help="run a forecast-shaped job on multiprocessing.Pool, then on distpool.Pool "
             "(see 'distpool demo --help')")
    return parser


def _worker(args: argparse.Namespace, passthrough: list[str]) -> int:
    try:
        settings = config.resolve_for_cluster(
            broker=args.broker, result_url=args.result_url, queue=args.queue,
            worker_lost_timeout=args.worker_lost_timeout, secret_file=args.secret_file,
            insecure=args.insecure)
        settings.require_secret()
    except (ValueError, DistpoolError) as exc:
        print(f"distpool worker: {exc}", file=sys.stderr)
        return 2
    from .worker.node import run

    try:
        return run(settings, concurrency=args.concurrency, name=args.name,
                   loglevel=args.loglevel, extra_args=passthrough, pool=args.pool,
                   stop_timeout=args.stop_timeout)
    except DistpoolError as exc:  # what cannot run here (a process model, an old Redis)
        print(f"distpool worker: {exc}", file=sys.stderr)
        return 2


def _cluster(args: argparse.Namespace) -> int:
    from .local.cluster import LocalCluster, LocalClusterError

    cluster = LocalCluster(args.workers)
    try:
        cluster.start()
    except LocalClusterError as exc:  # no Redis server to run, say: what to do instead
        print(f"distpool cluster: {exc}", file=sys.stderr)
        return 2
    with cluster, tempfile.TemporaryDirectory() as directory:
        secret_file = Path(directory) / "secret"
        secret_file.touch(mode=0o600)
        secret_file.write_text(cluster.secret)
        settings = {"DISTPOOL_BROKER_URL": cluster.broker_url,
                    "DISTPOOL_SECRET_FILE": str(secret_file)}
        lines = "".join(f"  {line}\n" for line in setting_lines(settings))
        print(f"distpool local cluster with {args.workers} worker processes: "
              f"{cluster.broker_url}\n{lines}"
              "  then Pool() uses it, and 'distpool worker' adds workers to it.\n"
              "Ctrl-C stops it.", flush=True)
        for stop_signal in platform.stop_signals():
            signal.signal(stop_signal, lambda *_: sys.exit(0))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def _checkpoints(args: argparse.Namespace) -> int:
    from .client import journal
    from .client.resume import journal_root

    root = args.dir or journal_root()
    if args.action == "rm":
        if not args.name:
            print("distpool checkpoints rm: name the run to remove", file=sys.stderr)
            return 2
        try:
            journal.remove(root, args.name)
        except (OSError, DistpoolError) as exc:
            print(f"distpool checkpoints rm: {exc}", file=sys.stderr)
            return 1
        return 0
    for found in journal.journals(root):
        state = ("finished" if found.finished
                 else f"held by {found.holder}" if found.holder else "resumable")
        print(f"{found.name}  {found.records} records  {found.size:,} bytes  {state}  "
              f"last written {time.strftime('%Y-%m-%d %H:%M', time.localtime(found.modified))}")
    return 0


def setting_lines(settings: dict[str, str]) -> list[str]:
    """Shell lines that set the environment variables ``settings``, in the shells of this
    platform: ``export`` on POSIX; on Windows, for cmd.exe and for PowerShell."""
    if not platform.windows:
        return ["export " + " ".join(f"{name}={value}" for name, value in settings.items())]
    return [" & ".join(f"set {name}={value}" for name, value in settings.items()) + "   (cmd)",
            "; ".join(f'$env:{name}="{value}"' for name, value in settings.items())
            + "   (PowerShell)"]


def _status(args: argparse.Namespace) -> int:
    settings = config.resolve_for_cluster(broker=args.broker, result_url=args.result_url,
                                          queue=args.queue)
    from .status import cluster_status

    try:
        status = cluster_status(settings, args.timeout)
    except Exception as exc:
        print(f"distpool status: cannot reach the cluster: {exc}", file=sys.stderr)
        return 2
    alive = [node for node in status["nodes"] if node["alive"]]
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if alive else 1
    print(f"broker {status['broker']}, queue {status['queue']}: "
          f"{status['queue_depth']} message(s) waiting")
    unknown = sum(node["busy"] is None for node in alive)
    print(f"nodes: {len(alive)} alive of {len(status['nodes'])}, "
          f"{sum(node['slots'] for node in alive)} slots, "
          f"{sum(node['busy'] or 0 for node in alive)} busy"
          + (f" (not known for {unknown} node(s) run with a Celery pool)" if unknown else ""))
    for node in status["nodes"]:
        print("  " + _node_line(node))
        if args.slots:
            for slot in node["slot_detail"]:
                print("    " + _slot_line(slot))
    print(f"pools with work in flight: {len(status['pools'])}")
    for pool in status["pools"]:
        print(f"  {pool['id'][:12]}  {pool['host']}:{pool['pid']}  processes "
              f"{pool['processes']}  done {pool['done']} of {pool['sent']} sent, "
              f"{pool['in_flight']} in flight")
    return 0 if alive else 1


#: The shape of ``distpool status --json``, for its help; tests/integration/test_status.py
#: pins its keys.
STATUS_JSON = """\
--json prints one object:
  broker        the broker URL, password masked
  queue         the queue's name
  queue_depth   messages waiting in it
  nodes         one object per node, by name (see below)
  pools         one object per pool with work in flight: id, host, pid, processes,
                started, sent, done, in_flight

Each node: name, host, pid (its parent's), kind ("slots" for the default process model,
"celery" for a worker run with a Celery pool, --pool prefork or threads), alive (false once
its record has lapsed: the node died or cannot reach Redis), lapsed_for (seconds, else null),
started (Unix time), slots, busy (null for a Celery pool, which reports no such thing),
registered (how many of its slots consume from the broker) and slot_detail: for each slot,
index, name (its Celery node), pid (null while it restarts), state ("idle", "busy" or
"restarting"), message (the id of the message it runs, else null), since (Unix time it began
it), running_for (seconds) and registered. A node run with a Celery pool has no slot_detail;
its pid and started are null. Nodes that lapsed are listed for 10 minutes, then dropped.
"""


def _node_line(node: dict[str, Any]) -> str:
    busy = "?" if node["busy"] is None else node["busy"]
    line = f"{node['name']:40} {node['host']:20} slots {node['slots']:3}  busy {busy:>3}"
    if not node["alive"]:
        return f"{line}  lapsed {node['lapsed_for']:g} s ago"
    if node["kind"] == "celery":
        return f"{line}  (Celery pool)"
    missing = node["slots"] - node["registered"]
    return f"{line}  ({missing} not consuming)" if missing else line


def _slot_line(slot: dict[str, Any]) -> str:
    pid = "-" if slot["pid"] is None else slot["pid"]
    line = f"slot {slot['index']:3}  pid {pid:>7}  {slot['state']:10}"
    if slot["message"] is not None:
        line += f"  {slot['message']} for {slot['running_for']:g} s"
    return line if slot["registered"] or slot["pid"] is None else f"{line}  (not consuming)"


def _demo(argv: list[str]) -> int:
    # Run as __main__, as a user's script is: its task class then travels by value.
    sys.argv = ["distpool demo", *argv]
    try:
        runpy.run_module("distpool.demo", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _log_level(text: str) -> str:
    """A logging level name, checked here: a bad one would fail every slot, one by one."""
    name = text.upper()
    if not isinstance(logging.getLevelName(name), int):
        raise argparse.ArgumentTypeError(
            f"not a log level: {text!r} (DEBUG, INFO, WARNING, ERROR or CRITICAL)")
    return name


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, at least 0, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
