"""Start a pool on the embedded local cluster, report its processes, then wait to be killed."""
import json
import sys
import time

import psutil

import distpool


def square(x):
    return x * x


if __name__ == "__main__":
    pool = distpool.Pool(2)
    assert pool.map(square, range(4)) == [0, 1, 4, 9]
    supervisor = psutil.Process(pool._cluster._supervisor.pid)
    pids = [supervisor.pid] + [p.pid for p in supervisor.children(recursive=True)]
    print(json.dumps(pids), flush=True)
    time.sleep(600)
    sys.exit(1)
