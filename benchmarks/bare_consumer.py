"""The bare consumer of :mod:`benchmarks.consumer_floor`: distpool's task runner on each
message of a queue, with nothing of Celery's or kombu's around it. A measuring device, not a
worker (see there).

    python benchmarks/bare_consumer.py REDIS_URL QUEUE SECRET inline|handed-off

Run by its path, not as ``-m benchmarks...``: the tasks it runs ship the benchmarks package as
a bundle, which a process that has imported it already cannot take.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading

from distpool.redis_client.connection import Connection
from distpool.wire.signing import Signer
from distpool.worker.runner import ProcessLocalRunner

#: How long a blocking move waits before it is sent again, seconds.
MOVE_TIMEOUT = 1


def bare_consumer(url: str, queue_name: str, secret: str, handed_off: bool) -> None:
    """Take the messages of ``queue_name`` for ever, running each with distpool's runner."""
    runner = ProcessLocalRunner(url, Signer(secret.encode()), claim_ttl=60.0,
                                flags_redeliveries=True).get()
    connection = Connection(url, timeout=None)
    held = f"consumer-floor:held:{os.getpid()}"

    def run(item: bytes) -> None:
        document = json.loads(item)
        messages, _kwargs, _embed = json.loads(document["body"])
        runner.run(messages, document["headers"]["id"], redelivered=False,
                   raise_soft_limit_after=None)

    taken_items: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    finished: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def task_thread() -> None:
        while True:
            run(taken_items.get())
            finished.put(True)

    if handed_off:
        threading.Thread(target=task_thread, daemon=True).start()
    while True:
        [item] = connection.run([("BLMOVE", queue_name, held, "RIGHT", "LEFT", MOVE_TIMEOUT)],
                                reply_timeout=MOVE_TIMEOUT + 5)
        if item is None:
            continue
        if handed_off:
            taken_items.put(item)
            finished.get()
        else:
            run(item)
        connection.send([("LREM", held, -1, item)])


if __name__ == "__main__":
    url, queue_name, secret, mode = sys.argv[1:]
    bare_consumer(url, queue_name, secret, handed_off=mode == "handed-off")
