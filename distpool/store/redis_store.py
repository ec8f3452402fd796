"""What clients and workers keep in the result Redis: pools, their results and the claims on
their messages, and who serves a queue. The keys are named in :mod:`distpool.store.keys`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..redis_client import version
from ..redis_client.connection import Connection
from ..wire.envelope import MESSAGE_DONE
from . import keys
from .blobs import Blobs

#: Unread results of a pool whose client vanished are dropped after this long.
RESULTS_TTL = 24 * 3600
#: Largest batch of result records taken in one round trip.
FETCH_BATCH = 512
#: What a claim finds when the message's pool has ended.
POOL_GONE = "gone"
#: Record pushed by the client itself to wake its collector; never a valid result record.
WAKE_UP = b"wake"

# Claim message ARGV[1] for ARGV[2] for ARGV[3] ms unless a claim on it has not lapsed: another
# holder's, or, unless ARGV[5] is 1 (a renewal), the same holder's (a second delivery of what
# that process runs). Returns {'claimed', the previous holder, if another, or ''},
# {'held', holder, ms its claim has left}, {'done', '', -1}, or {'gone', '', -1} when the
# pool's liveness key KEYS[2] is gone (terminated, or its client died): in the same script,
# so that no claim outlives the pool's keys, nor runs a message of a pool that has just ended
# (a second delivery across a RabbitMQ restart, just after its first run's results ended the
# pool). Claims carry their deadline: fields of a hash cannot expire on their own.
_CLAIM = """
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local claim = redis.call('HGET', KEYS[1], ARGV[1])
if claim == 'done' then
    return {'done', '', -1}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
    return {'gone', '', -1}
end
local previous = ''
if claim then
    local deadline, holder = string.match(claim, '^(%d+) (.*)$')
    if holder and (holder ~= ARGV[2] or ARGV[5] ~= '1') then  -- (not a claim: overwritten)
        if tonumber(deadline) > now then
            return {'held', holder, tonumber(deadline) - now}
        end
        previous = holder
    end
end
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[3])) .. ' ' .. ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {'claimed', previous, 0}
"""

# Give message ARGV[1]'s claim to ARGV[3], for ARGV[4] ms, if ARGV[2] (a holder known to be
# gone) still holds it.
_TAKE_OVER = """
local claim = redis.call('HGET', KEYS[1], ARGV[1])
if not claim or string.match(claim, '^%d+ (.*)$') ~= ARGV[2] then
    return 0
end
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[4])) .. ' ' .. ARGV[3])
return 1
"""


# The collector's take. First it acknowledges the previous take: it drops the first ARGV[4]
# records of the received list KEYS[2] if the count of records acknowledged so far, KEYS[3],
# is still ARGV[3] (a retry of a take whose acknowledgement went through finds the count moved
# on, and drops nothing). Then it moves up to ARGV[1] records from the pool's results KEYS[1]
# to the end of the received list, and returns the whole received list: what the collector
# has taken and not yet acknowledged, including what a reply lost on the way left there.
# Records only ever join the received list at its end, so the acknowledgement drops the same
# records whether the blocking move before the take brought one or not; done here, it costs
# no command and no reply of its own.
_TAKE = """
local acknowledged = tonumber(ARGV[3])
local last = tonumber(ARGV[4])
if last > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') == acknowledged then
    redis.call('LTRIM', KEYS[2], last, -1)
    redis.call('SET', KEYS[3], acknowledged + last, 'EX', ARGV[2])
end
local moved = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #moved > 0 then
    redis.call('LTRIM', KEYS[1], #moved, -1)
    redis.call('RPUSH', KEYS[2], unpack(moved))
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return redis.call('LRANGE', KEYS[2], 0, -1)
"""


# Push result records ARGV[5...] to the pool's results KEYS[1] while holder ARGV[2] holds the
# claim of message ARGV[1] in KEYS[2] (and with ARGV[4] = 1, mark the message done); return
# 1, else 0 and push nothing. In batches: Lua's unpack takes some thousands of values at most.
_PUSH_WHILE_HELD = """
local claim = redis.call('HGET', KEYS[2], ARGV[1])
if not claim or select(2, string.match(claim, '^(%d+) (.*)$')) ~= ARGV[2] then
    return 0
end
for first = 5, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[4] == '1' then
    redis.call('HSET', KEYS[2], ARGV[1], 'done')
end
return 1
"""


# Hold KEYS[1] for ARGV[1] for ARGV[2] ms, unless another holds it: then return that holder.
_HOLD = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
    return held
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# Let KEYS[1] go if ARGV[1] holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
end
return 0
"""


class _Taken:
    """What a pool's collector has taken: how many records it has acknowledged in all, and
    how many it took last (to acknowledge with its next take, once they are handled)."""

    def __init__(self) -> None:
        self.acknowledged = 0
        self.last = 0
        #: Whether records may wait in the received list unseen (before the first take, and
        #: after a failed one): then the next take does not block.
        self.unseen = True


#: What every pool's info holds (see ``Engine._report``), as ``distpool status`` shows it.
_POOL_INFO = ("host", "pid", "processes", "sent", "done", "in_flight")


class ClaimOutcome(NamedTuple):
    """What a claim found: ``outcome`` is ``claimed`` (``other``: the previous holder, whose
    claim lapsed, if any), ``held`` (by ``other``, for ``left_ms`` more), ``done``, or
    ``gone`` (the pool ended: nothing was written)."""

    outcome: str
    other: str | None
    left_ms: int


class RedisStore:
    """The store in the Redis at ``url``. ``reply_timeout``: how late a reply may be (a pop's
    beyond its own wait) before the call fails (None: waits for ever, as workers do: they
    carry on where they were when a frozen Redis wakes)."""

    def __init__(self, url: str, reply_timeout: float | None = None) -> None:
        # Every command on one connection, but the collector's blocking pop on another:
        # a process holds at most two, whichever of its threads use the store.
        self._commands = Connection(url, timeout=reply_timeout)
        self._popping = Connection(url, timeout=reply_timeout)
        self._reply_timeout = reply_timeout
        self._taken: dict[str, _Taken] = {}
        self.blobs = Blobs(self._commands)

    # -- pools ------------------------------------------------------------------------

    def refresh_pool(self, pool_id: str, ttl: float, info: dict[str, Any],
                     keep: float | None = None) -> bool:
        """Mark the pool live for ``ttl`` seconds more, or ``keep`` if longer, with what its
        client reports for ``ttl`` (and keep its blobs as long as the mark); return whether it
        was still marked live."""
        expiry, kept = int(ttl * 1000), int(max(ttl, keep or 0.0) * 1000)
        was_live, *_ = self._commands.run([
            ("EXISTS", keys.live(pool_id)),
            ("SET", keys.live(pool_id), b"1", "PX", kept),
            ("SET", keys.info(pool_id), json.dumps(info), "PX", expiry),
            ("PEXPIRE", keys.blobs(pool_id), kept)])
        return bool(was_live)

    def resume_pool(self, pool_id: str) -> list[bytes] | None:
        """Take the pool over from a client that died: the records that client left unread
        or unacknowledged, which stay where they are (the collector reads them again), and
        this store's count of acknowledged ones set to Redis's, so that its acknowledgements
        count on from that client's. None if the pool is not live any more."""
        live, acknowledged, received, results = self._commands.run([
            ("EXISTS", keys.live(pool_id)), ("GET", keys.acknowledged(pool_id)),
            ("LRANGE", keys.received(pool_id), 0, -1),
            ("LRANGE", keys.results(pool_id), 0, -1)])
        if not live:
            return None
        taken = self._taken.setdefault(pool_id, _Taken())
        taken.acknowledged = int(acknowledged or 0)
        return [record for record in received + results if record != WAKE_UP]

    def pools(self) -> dict[str, dict[str, Any]]:
        """Pool id -> info, for every pool whose client reports itself alive."""
        names: list[bytes] = []
        cursor = b"0"
        while True:
            [(cursor, page)] = self._commands.run([("SCAN", cursor, "MATCH", keys.info("*"),
                                                    "COUNT", 1000)])
            names += page
            if cursor == b"0":
                break
        found: dict[str, dict[str, Any]] = {}
        [infos] = self._commands.run([("MGET", *names)]) if names else [[]]
        for key, raw in zip(names, infos):
            try:
                info = json.loads(raw) if raw is not None else None
            except (ValueError, RecursionError):  # not what a client wrote
                continue
            if isinstance(info, dict) and set(_POOL_INFO) <= info.keys():
                found[key.decode("utf-8", "replace").split(":")[2]] = info
        return found

    def pool_is_live(self, pool_id: str) -> bool:
        [live] = self._commands.run([("EXISTS", keys.live(pool_id))])
        return bool(live)

    def push_results(self, pool_id: str, records: list[bytes],
                     finished: str | None = None) -> None:
        """Push result records; with ``finished``, a message id, mark that message's claim
        done in the same round trip."""
        # Sent again after a lost reply, a record arrives twice: the client keeps the first.
        key = keys.results(pool_id)
        commands: list[tuple[Any, ...]] = [("RPUSH", key, *records),
                                           ("EXPIRE", key, RESULTS_TTL)]
        if finished is not None:
            commands.append(_finish(finished))
        self._commands.run(commands)

    def push_results_while_held(self, pool_id: str, records: list[bytes], message_id: str,
                                holder: str, finished: bool) -> bool:
        """As :meth:`push_results` (``finished``: marking ``message_id`` done), but only while
        ``holder`` holds the message's claim; False, with nothing pushed, if not. Checked in
        Redis after the commands this process sent before on the connection, a claim sent
        without waiting (:meth:`claim_soon`) among them: one round trip, where reading that
        claim's reply first would take two."""
        [pushed] = self._commands.run([
            ("EVAL", _PUSH_WHILE_HELD, 2, keys.results(pool_id), keys.messages_of(message_id),
             message_id, holder, RESULTS_TTL, int(finished), *records)])
        return bool(pushed)

    def pop_results(self, pool_id: str, timeout: float) -> list[bytes]:
        """Block for the next record, then take whatever else waits behind it (acknowledging
        what the previous call returned), in one round trip: Redis runs the pipelined take as
        soon as the BLMOVE is served, and every reply comes at once. For one thread
        at a time (a pool's collector), which has handled what the previous call returned:
        its connection is blocked meanwhile.

        Nothing taken is lost with a reply lost on its way back: records move, atomically,
        into the pool's received list, which keeps them until the next call acknowledges
        them; a call after a failed one returns them again (a record seen twice is dropped
        by the engine, as one pushed twice)."""
        results, received = keys.results(pool_id), keys.received(pool_id)
        taken = self._taken.setdefault(pool_id, _Taken())
        commands: list[tuple[Any, ...]] = []
        if not taken.unseen:
            commands.append(("BLMOVE", results, received, "LEFT", "RIGHT", timeout))
        commands.append(("EVAL", _TAKE, 3, results, received, keys.acknowledged(pool_id),
                         FETCH_BATCH, RESULTS_TTL, taken.acknowledged, taken.last))
        taken.unseen = True  # until the replies are in
        replies = self._popping.run(
            commands,
            reply_timeout=None if self._reply_timeout is None else timeout + self._reply_timeout)
        taken.acknowledged += taken.last
        records: list[bytes] = replies[-1]
        taken.last, taken.unseen = len(records), False
        return [record for record in records if record != WAKE_UP]

    def wake(self, pool_id: str) -> None:
        self.push_results(pool_id, [WAKE_UP])

    def close_pool(self, pool_id: str) -> None:
        self._commands.run([("DEL", keys.live(pool_id), keys.info(pool_id),
                             keys.results(pool_id), keys.received(pool_id),
                             keys.acknowledged(pool_id), keys.messages(pool_id),
                             keys.blobs(pool_id))])
        self._taken.pop(pool_id, None)

    # -- what became of a message --------------------------------------------------------

    def claim(self, message_id: str, holder: str, ttl: float,
              renewal: bool = False) -> ClaimOutcome:
        """Claim the message for ``holder`` for ``ttl`` seconds; with ``renewal``, renew the
        claim it holds (else a claim of its own that has not lapsed is in the way too)."""
        [found] = self._commands.run([_claim(message_id, holder, ttl, renewal)])
        return _claim_outcome(found)

    def claim_soon(self, message_id: str, holder: str, ttl: float) -> Callable[[], ClaimOutcome]:
        """As :meth:`claim`, but sent without waiting: the returned callable reads its
        outcome later (raising if the connection failed meanwhile)."""
        reply = self._commands.send([_claim(message_id, holder, ttl, renewal=False)])
        return lambda: _claim_outcome(reply.get()[0])

    def take_over(self, message_id: str, gone: str, holder: str, ttl: float) -> bool:
        """Claim the message from ``gone``, a holder known to be dead; False if its claim
        changed meanwhile."""
        [taken] = self._commands.run([("EVAL", _TAKE_OVER, 1, keys.messages_of(message_id),
                                       message_id, gone, holder, int(ttl * 1000))])
        return bool(taken)

    def finish(self, message_id: str) -> None:
        """Mark the message done without results to push (its pool was gone)."""
        self._commands.run([_finish(message_id)])

    def mark_timed_out(self, message_id: str) -> None:
        """Record that the message ran past its hard time limit (before its process is
        killed, so that whoever receives it next knows)."""
        key = keys.messages_of(message_id)
        self._commands.run([("MULTI",), ("HSET", key, f"{message_id}:timed_out", 1),
                            ("EXPIRE", key, RESULTS_TTL), ("EXEC",)])

    def count_redelivery(self, message_id: str) -> tuple[int, bool]:
        """Count one more delivery of a message delivered before, which never finished;
        return how many there were, and whether it had run out of time."""
        key = keys.messages_of(message_id)
        *_, (redeliveries, timed_out, _) = self._commands.run([
            ("MULTI",), ("HINCRBY", key, f"{message_id}:redeliveries", 1),
            ("HEXISTS", key, f"{message_id}:timed_out"), ("EXPIRE", key, RESULTS_TTL),
            ("EXEC",)])
        return int(redeliveries), bool(timed_out)

    def message_states(self, pool_id: str, message_ids: list[str]) -> list[str | None]:
        """Each message's claim as the workers left it: None when nobody has claimed it
        (it waits in the queue, or was lost), ``MESSAGE_DONE``, or the claim's raw value."""
        if not message_ids:
            return []
        [claims] = self._commands.run([("HMGET", keys.messages(pool_id), *message_ids)])
        return [None if claim is None else claim.decode("utf-8", "replace")
                for claim in claims]

    # -- workers ----------------------------------------------------------------------

    def register_worker(self, queue: str, name: str, slots: int, ttl: float) -> None:
        self._commands.run([("ZADD", keys.workers(queue), time.time() + ttl, name),
                            ("HSET", keys.slots(queue), name, slots)])

    def unregister_worker(self, queue: str, name: str) -> None:
        self._commands.run([("ZREM", keys.workers(queue), name), ("HDEL", keys.slots(queue), name)])

    def worker_slots(self, queue: str) -> int:
        """Processes of the workers whose registration has not expired."""
        return sum(self.workers(queue).values())

    def workers(self, queue: str) -> dict[str, int]:
        """Name -> processes, for the workers whose registration has not expired."""
        now = time.time()
        _, names = self._commands.run([("ZREMRANGEBYSCORE", keys.workers(queue), "-inf", now),
                                       ("ZRANGEBYSCORE", keys.workers(queue), now, "+inf")])
        if not names:
            return {}
        [slots] = self._commands.run([("HMGET", keys.slots(queue), *names)])
        # Skipping what is not a count: anyone who can write to the store could put it there.
        return {name.decode("utf-8", "replace"): int(n) for name, n in zip(names, slots)
                if n is not None and n.isdigit()}

    def hold_run(self, name: str, holder: str, ttl: float) -> str | None:
        [other] = self._commands.run([("EVAL", _HOLD, 1, keys.run(name), holder,
                                       int(ttl * 1000))])
        return None if other is None else other.decode("utf-8", "replace")

    def release_run(self, name: str, holder: str) -> None:
        self._commands.run([("EVAL", _RELEASE, 1, keys.run(name), holder)])

    def ping(self) -> None:
        """Raise if the store cannot be reached, and
        :class:`~distpool.errors.UnsupportedRedisError` if its Redis is older than 6.2 (one
        ``INFO server``, in place of a ``PING``)."""
        version.check(self._commands, "result store")

    def close(self) -> None:
        self._commands.close()
        self._popping.close()


def _claim(message_id: str, holder: str, ttl: float, renewal: bool) -> tuple[Any, ...]:
    return ("EVAL", _CLAIM, 2, keys.messages_of(message_id), keys.live(keys.pool_of(message_id)),
            message_id, holder, int(ttl * 1000), RESULTS_TTL, int(renewal))


def _claim_outcome(found: Any) -> ClaimOutcome:
    if isinstance(found, Exception):
        raise found
    outcome, other, left = found
    return ClaimOutcome(outcome.decode(), other.decode("utf-8", "replace") or None, int(left))


def _finish(message_id: str) -> tuple[Any, ...]:
    return ("HSET", keys.messages_of(message_id), message_id, MESSAGE_DONE)
