"""Node records: what each node of slots serving a queue runs, kept in the result Redis by
the node's parent (:mod:`distpool.worker.slots.report`) and read by ``distpool status``.

A record is one field of the hash ``distpool:nodes:<queue>``: the node's name, and a JSON
object ``{"host", "pid", "started", "slots": [{"index", "name", "pid", "state", "message",
"since"}, ...]}`` (see :func:`read_nodes` for what each means). Its expiry is the node's score
in the sorted set ``distpool:nodes-alive:<queue>``, in milliseconds of the Redis server's
clock, so that hosts whose clocks disagree still agree on which nodes lapsed. A node that
stops removes its record; one that dies stops renewing it, shows as lapsed, and is swept
``LAPSED_KEPT`` seconds later by the next node to publish (or with both keys, when none does).

Reading them all is one round trip, whatever the number of slots: ``distpool status`` asks
no worker anything. Workers run with a Celery pool (``--pool prefork``) have no parent to
publish a record; their registration (``distpool:workers:<queue>``) stands for them, with
their busy processes unknown.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..redis_client.connection import Connection
from ..retry import RetryPolicy
from . import keys

#: How long a lapsed node stays listed (as lapsed) before it is swept.
LAPSED_KEPT = 600.0
#: What a slot's ``state`` may be.
SLOT_STATES = ("idle", "busy", "restarting")

# Publish record ARGV[2] of node ARGV[1], alive for ARGV[3] ms from now on the server's clock;
# sweep the records that lapsed more than ARGV[4] ms ago; both keys outlive the last record
# renewed by as much.
_PUBLISH = """
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local swept = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))
for _, name in ipairs(swept) do
    redis.call('HDEL', KEYS[2], name)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]))
return 1
"""


class NodeRecords:
    """The node records in the Redis at ``url``, through one connection of its own.

    ``timeout`` bounds each connect and each reply: the parent of slots publishes between two
    looks at its slots, which must not wait long on a Redis that is away. No retry either: a
    record that fails is published again at the next interval.
    """

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self._commands = Connection(url, timeout=timeout, connect_timeout=timeout,
                                       retry=RetryPolicy(retries=0))

    def publish(self, queue: str, name: str, record: dict[str, Any], ttl: float) -> None:
        """Publish ``record`` of node ``name``, alive ``ttl`` seconds unless renewed."""
        self._commands.run([("EVAL", _PUBLISH, 2, keys.nodes_alive(queue), keys.nodes(queue),
                             name, json.dumps(record, separators=(",", ":")),
                             int(ttl * 1000), int(LAPSED_KEPT * 1000))])

    def remove(self, queue: str, name: str) -> None:
        """Remove the record of node ``name``, which stops."""
        self._commands.run([("ZREM", keys.nodes_alive(queue), name),
                            ("HDEL", keys.nodes(queue), name)])

    def read(self, queue: str) -> list[dict[str, Any]]:
        """What :func:`read_nodes` returns, read in one round trip (two when workers run
        with a Celery pool)."""
        clock, alive, records, registered = self._commands.run([
            ("TIME",),
            ("ZRANGE", keys.nodes_alive(queue), 0, -1, "WITHSCORES"),
            ("HGETALL", keys.nodes(queue)),
            ("ZRANGEBYSCORE", keys.workers(queue), time.time(), "+inf")])
        now = int(clock[0]) + int(clock[1]) / 1e6
        expiries = {_text(name): float(score) / 1000 for name, score in _pairs(alive)}
        texts = {_text(name): raw for name, raw in _pairs(records)}
        workers = {_text(name) for name in registered}
        nodes = read_nodes(now, expiries, texts, workers)
        # Registrations that no record claims: workers run with a Celery pool.
        claimed = {slot["name"] for node in nodes for slot in node["slot_detail"]}
        others = sorted(workers - claimed)
        if others:
            [counts] = self._commands.run([("HMGET", keys.slots(queue), *others)])
            nodes += [_celery_node(name, count) for name, count in zip(others, counts)
                      if count is not None and count.isdigit()]
        return sorted(nodes, key=lambda node: str(node["name"]))

    def close(self) -> None:
        self._commands.close()


def read_nodes(now: float, expiries: dict[str, float], records: dict[str, bytes],
               registered: set[str]) -> list[dict[str, Any]]:
    """The nodes of slots whose records are ``records`` (name -> JSON), with ``expiries``
    (name -> when each lapses, in seconds) at time ``now``, given the Celery workers whose
    registration is live, ``registered``: as ``distpool status --json`` lists them.

    Each node: ``name``; ``host``; ``pid`` (its parent's); ``kind`` (``"slots"``);
    ``alive``, and ``lapsed_for`` (seconds since its record lapsed, else None); ``started``
    (Unix time); ``slots`` and ``busy`` (counts); ``registered``, how many of its slots' Celery
    workers are registered (consuming from the broker); and ``slot_detail``, each slot's
    ``index``, ``name`` (its Celery node), ``pid`` (None while it restarts), ``state``
    (``idle``, ``busy`` or ``restarting``), ``message`` (the id of the message it runs, else
    None), ``since`` (Unix time it began that message, else None), ``running_for`` (seconds
    since then, by the Redis server's clock, else None) and ``registered``.

    A record that is not what a parent writes is skipped: anyone who can write to the store
    could put it there.
    """
    nodes = []
    for name, raw in records.items():
        record = _record(raw)
        expiry = expiries.get(name)
        if record is None or expiry is None:
            continue
        detail = [{**slot, "running_for": None if slot["since"] is None
                   else round(max(0.0, now - slot["since"]), 1),
                   "registered": slot["name"] in registered} for slot in record["slots"]]
        nodes.append({
            "name": name, "host": record["host"], "pid": record["pid"], "kind": "slots",
            "alive": expiry > now,
            "lapsed_for": None if expiry > now else round(now - expiry, 1),
            "started": record["started"], "slots": len(detail),
            "busy": sum(slot["state"] == "busy" for slot in detail),
            "registered": sum(slot["registered"] for slot in detail), "slot_detail": detail})
    return nodes


def _celery_node(name: str, count: bytes) -> dict[str, Any]:
    """A worker run with a Celery pool, as a node: from its registration alone."""
    slots = int(count)
    return {"name": name, "host": name.partition("@")[2], "pid": None, "kind": "celery",
            "alive": True, "lapsed_for": None, "started": None, "slots": slots, "busy": None,
            "registered": slots, "slot_detail": []}


def _record(raw: bytes) -> dict[str, Any] | None:
    """A node record, checked; None if it is not one."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    host, pid, started, slots = (record.get(key) for key in ("host", "pid", "started", "slots"))
    if not (isinstance(host, str) and _is_int(pid) and _is_number(started)
            and isinstance(slots, list)):
        return None
    checked = [_slot(slot) for slot in slots]
    if None in checked:
        return None
    return {"host": host, "pid": pid, "started": started, "slots": checked}


def _slot(slot: Any) -> dict[str, Any] | None:
    if not isinstance(slot, dict):
        return None
    index, name, pid, state, message, since = (
        slot.get(key) for key in ("index", "name", "pid", "state", "message", "since"))
    if (_is_int(index) and isinstance(name, str) and (pid is None or _is_int(pid))
            and state in SLOT_STATES and (message is None or isinstance(message, str))
            and (since is None or _is_number(since))):
        return {"index": index, "name": name, "pid": pid, "state": state, "message": message,
                "since": since}
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    """The pairs of a reply that is a map or a list of pairs (RESP3), or a flat list of
    alternating keys and values (RESP2)."""
    if isinstance(reply, dict):
        return list(reply.items())
    if reply and isinstance(reply[0], list):
        return [(key, value) for key, value in reply]
    return list(zip(reply[::2], reply[1::2]))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
