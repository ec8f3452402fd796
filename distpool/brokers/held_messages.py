"""Messages between the queue and a consumer's delivery record: the reliable-queue pattern.

kombu's Redis transport pops a message with BRPOP and records it as delivered (the
``unacked`` hash) in a second command. A consumer that died, froze or lost its connection
between the two held the only copy: in neither the queue nor the record, so nothing could
bring it back (celery#4354, kombu#305). Here the pop is an atomic move (BLMOVE) into a list of
the consumer's own, its *held list*, and the delivery record takes the message out of that
list in the same transaction that writes the record. At no instant is a message outside
Redis's keeping: it is in the queue, in a held list, or in the ``unacked`` record.

A held list outlives its consumer, so somebody must give its messages back:

* the consumer's lease, a score in the ``distpool:holders`` sorted set, is renewed whenever
  it waits for a message; any consumer's periodic sweep puts the held messages of a holder
  whose lease has lapsed back at the head of their queue (:func:`restore_lapsed`);
* the parent of a slot that died does the same at once for that slot (:func:`restore`).

Putting an item back is one Lua call that removes it from the held list and pushes it only
if it was still there, so two sweepers, or a sweeper and a consumer that wakes up late, never
make two copies of it. What goes back is flagged as a second delivery, as kombu flags what
it restores: a slot's own consumer (:mod:`.redis_consumer`) keeps the message it runs in its
held list, so a held message may have begun to run, and the worker that receives it must
ask its claim before running it (see :mod:`distpool.worker.claims`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger("distpool")

#: The sorted set of holders: member the holder's id, score when its lease ends.
HOLDERS = "distpool:holders"
#: Most holders whose held messages one sweep puts back.
SWEEP_LIMIT = 100

# Pushed back at the head (the right end, where consumers pop) only if it was still held:
# ARGV[1] as held, ARGV[2] flagged as a second delivery.
_PUT_BACK = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) > 0 then
    redis.call('RPUSH', KEYS[2], ARGV[2])
    return 1
end
return 0
"""

# Forget a holder whose held list is empty; a holder that is alive registers again.
_FORGET_IF_EMPTY = """
if redis.call('LLEN', KEYS[1]) == 0 then
    redis.call('ZREM', KEYS[2], ARGV[1])
    return 1
end
return 0
"""

#: Which queue a held message goes back to, from the message (None: it is not a message).
QueueOf = Callable[[dict[str, Any]], "str | None"]


def held_list(holder: str) -> str:
    return f"distpool:held:{holder}"


def renew_lease(client: Any, holder: str, seconds: float) -> None:
    client.zadd(HOLDERS, {holder: time.time() + seconds})


def restore(client: Any, holder: str, queue_of: QueueOf) -> int:
    """Put every message held by ``holder`` back at the head of its queue, drop what is not a
    message, and forget the holder once its list is empty. Returns how many went back."""
    key = held_list(holder)
    restored = 0
    for item in client.lrange(key, 0, -1):
        found = _queue_of(item, queue_of)
        if found is None:
            logger.error("dropped a held item that is not a message: %r", item[:200])
            client.lrem(key, -1, item)
        else:
            queue, flagged = found
            restored += client.eval(_PUT_BACK, 2, key, queue, item, flagged)
    client.eval(_FORGET_IF_EMPTY, 2, key, HOLDERS, holder)
    if restored:
        logger.warning("put %d message(s) held by %s back on the queue", restored, holder)
    return restored


def restore_lapsed(client: Any, queue_of: QueueOf, now: float | None = None) -> int:
    """Restore the messages of every holder whose lease has lapsed (a dead or frozen
    consumer). Returns how many went back."""
    lapsed: Sequence[bytes] = client.zrangebyscore(
        HOLDERS, "-inf", time.time() if now is None else now, start=0, num=SWEEP_LIMIT)
    return sum(restore(client, holder.decode(), queue_of) for holder in lapsed)


def _queue_of(item: bytes, queue_of: QueueOf) -> tuple[str, bytes] | None:
    """The queue the held ``item`` goes back to, and the item as it goes back (flagged as a
    second delivery); None if it is not a message."""
    try:
        payload = json.loads(item)
        queue = queue_of(payload) if isinstance(payload, dict) else None
        if queue is None:
            return None
        # Where kombu's restore flags it (queue_of has read the delivery info already).
        payload["properties"]["delivery_info"]["redelivered"] = True
        if isinstance(payload.get("headers"), dict):
            payload["headers"]["redelivered"] = True
        return queue, json.dumps(payload).encode()
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return None
