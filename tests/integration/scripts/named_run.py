"""A named run, as a user's script would be: ``python named_run.py KIND PROCESSES COUNTER_URL``.
Its settings (cluster, checkpoint directory) come from the environment. Each task counts its
run in a Redis hash, so that a test can tell what ran twice. Prints the results (JSON), then
how many came from the journal."""
import json
import sys
import time

import redis

import distpool

ITEMS = 40


def work(x, counter_url):
    redis.Redis.from_url(counter_url).hincrby("runs", str(x), 1)
    time.sleep(0.2)
    return x * x


def work_one(pair):
    return work(*pair)


if __name__ == "__main__":
    kind, processes, counter_url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    items = [(x, counter_url) for x in range(ITEMS)]
    with distpool.Pool(processes, checkpoint="forecast-w48") as pool:
        if kind == "starmap":
            results = pool.starmap(work, items, chunksize=1)
        else:
            results = sorted(pool.imap_unordered(work_one, items))
        print(json.dumps(results), flush=True)
        print(pool.resumed, flush=True)
