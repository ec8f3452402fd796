"""``python -m benchmarks.scale``: the command line of the scale benchmark."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmarks import scale
from benchmarks.scale.report import chart, table

RESULTS = Path(__file__).parent.parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=scale.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--slots", type=int, default=16, help="slots per node")
    parser.add_argument("--secret", help="the key the nodes and the pools share (default: a "
                                         "new random one)")
    parser.add_argument("--worker-lost-timeout", type=float,
                        help="passed to the nodes (default: distpool's)")
    parser.add_argument("--seed", type=int, default=16, help="of the uneven durations")
    parser.add_argument("--quick", action="store_true",
                        help="smaller workloads, and no results file or chart written")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.slots < 1:
        parser.error("--nodes and --slots must be at least 1")
    if args.secret is not None and len(args.secret) < 32:
        parser.error("--secret must be at least 32 characters")
    from benchmarks.run import machine, versions

    for name in ("DISTPOOL_BROKER_URL", "DISTPOOL_RESULT_URL", "DISTPOOL_QUEUE"):
        os.environ.pop(name, None)
    figures = scale.run(args.nodes, args.slots, args.secret, args.quick,
                        args.worker_lost_timeout, args.seed)
    heading = (f"{time.strftime('%Y-%m-%d')}, {machine()}"
               f"{', quick' if args.quick else ''}")
    figures = {"taken": heading, "versions": versions(), **figures}
    print(f"\n{args.nodes} nodes x {args.slots} slots, taken {heading}\n")
    print(table(figures))
    print(json.dumps({key: value for key, value in figures.items() if key != "timeline"},
                     indent=2))
    if not args.quick:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "scale.json").write_text(json.dumps(figures, indent=2) + "\n")
        chart(figures, args.output / "scale.png",
              f"{args.nodes} distpool worker nodes x {args.slots} slots on one machine: "
              f"{heading}")
        print(f"\nWrote {args.output / 'scale.json'} and {args.output / 'scale.png'}")
    kill = figures["node_kill"]
    return 0 if kill is None or kill["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
