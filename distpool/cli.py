"""The ``distpool`` command (also ``python -m distpool``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__, config


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, passthrough = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "worker":
        return _worker(args, passthrough)
    if passthrough:
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    return 2  # pragma: no cover - every subcommand is handled above


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distpool", description=__doc__)
    parser.add_argument("--version", action="version", version=f"distpool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    worker = commands.add_parser(
        "worker",
        help="run a worker that serves distpool pools",
        description="Run a Celery worker that serves distpool pools. Options not listed "
                    "here are passed to 'celery worker' unchanged (for example --pool, "
                    "--max-tasks-per-child, -E to send events for Flower).",
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
    worker.add_argument("--loglevel", "-l", default="WARNING", metavar="LEVEL",
                        help="log level (default: WARNING)")
    return parser


def _worker(args: argparse.Namespace, passthrough: list[str]) -> int:
    settings = config.resolve(broker=args.broker, result_url=args.result_url,
                              queue=args.queue)
    from .backends.celery_backend import run_worker

    name = args.name or f"distpool-{os.getpid()}@%h"
    return run_worker(settings, concurrency=args.concurrency, name=name,
                      loglevel=args.loglevel, extra_args=passthrough)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
