"""A named run, as a user's script would be:
``python named_run.py KIND PROCESSES COUNTER_URL [SLOW_SECONDS]``. Its settings (cluster,
checkpoint directory) come from the environment. Each task counts its run in a Redis hash,
so that a test can tell what ran twice; with SLOW_SECONDS, the first PROCESSES items take
that long (the first only, for KIND apply; the rest 0.2 s). Prints the results (JSON), then
how many came from the journal or from the tasks an earlier client of the run had sent."""
import json
import sys
import time

import redis

import distpool

ITEMS = 40


def work(x, counter_url, seconds):
    redis.Redis.from_url(counter_url).hincrby("runs", str(x), 1)
    time.sleep(seconds)
    return x * x


def work_one(arguments):
    return work(*arguments)


if __name__ == "__main__":
    kind, processes, counter_url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    slow = float(sys.argv[4]) if len(sys.argv) > 4 else 0.2
    slow_items = 1 if kind == "apply" else processes  # (applies run one after another)
    items = [(x, counter_url, slow if x < slow_items else 0.2) for x in range(ITEMS)]
    with distpool.Pool(processes, checkpoint="forecast-w48") as pool:
        if kind == "starmap":
            results = pool.starmap(work, items, chunksize=1)
        elif kind == "apply":
            results = [pool.apply(work, item) for item in items]
        else:
            results = sorted(pool.imap_unordered(work_one, items))
        print(json.dumps(results), flush=True)
        print(pool.resumed, flush=True)
