"""Submit long tasks that log their progress, print 'submitted', then wait to be killed or
interrupted. argv: broker, queue, log directory, pool_ttl. SIGUSR1 writes every thread's
stack to standard error (tests.support.exit_status)."""
import faulthandler
import os
import signal
import sys
import time

import distpool


def work(args):
    log, seconds = args
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.2)
    return seconds


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    broker, queue, logs, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    with distpool.Pool(2, broker=broker, queue=queue, pool_ttl=ttl) as pool:
        result = pool.map_async(work, [(os.path.join(logs, f"task{i}.log"), 60)
                                       for i in range(4)], chunksize=1)
        print("submitted", flush=True)
        result.get()
