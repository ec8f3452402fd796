"""Blobs: payloads too large for a message, as raw bytes in the result store.

A pool's blobs are fields of one hash (``distpool:pool:<id>:blobs``), so they live and die
with the pool: the client gives the hash its liveness key's expiry at every refresh and
deletes it with the pool's other keys; a worker that writes into a hash with no expiry (its
client is gone) gives it what the liveness key has left. So a blob never outlives its pool,
even when its client was killed half way through writing it.

The client names the blobs it writes (arguments, callables, initializers) by their hash; a
worker names a result by its task and hash (:func:`.keys.result_blob`). A blob is stored in parts
of :data:`PART_SIZE` bytes, fields ``<name>/0``, ``<name>/1``, ...: Redis refuses a string
over 512 MB (``proto-max-bulk-len``), and a part is one bounded command on Redis's single
thread, so other clients wait milliseconds, not seconds, behind it.

A reader trusts nothing it fetches: it reads parts until it holds exactly the size that the
signed reference gives, into a buffer of its own (writable: loaded arrays point into it), and
checks their SHA-256 against the reference before anyone unpickles them.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Iterable
from typing import Any

from ..errors import EnvelopeError, PayloadTooLargeError
from ..redis_client.connection import Connection
from ..redis_client.protocol import ReplyError
from ..wire.payload import BlobRef, Frame, Payload, describe_size
from . import keys

#: Bytes per stored part: Redis (jemalloc) handles large payloads in 1 MiB parts with far
#: less CPU than in 8 MiB parts.
PART_SIZE = 2**20
#: Parts sent in one go: the connection's other users wait at most this many.
PARTS_PER_ROUND_TRIP = 8
#: Parts asked for in one go. More replies waiting at once cost Redis more than the round
#: trips they save (10 MB read in 8 parts at a time: twice the CPU of 2 at a time).
READ_AHEAD = 2
#: How long (ms) a hash that a worker wrote into after its pool ended is kept.
ORPHAN_TTL_MS = 10_000

# Give the pool's blobs (KEYS[1]) an expiry if they have none: what the pool's liveness key
# (KEYS[2]) has left, else ARGV[1] ms.
_KEEP_WITH_POOL = """
if redis.call('PTTL', KEYS[1]) == -1 then
    local left = redis.call('PTTL', KEYS[2])
    if left <= 0 then
        left = tonumber(ARGV[1])
    end
    redis.call('PEXPIRE', KEYS[1], left)
end
return 0
"""


class Blobs:
    """The blobs of every pool, through one connection (parts are sent one command at a
    time, so the connection's other users wait at most a part)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def put(self, pool_id: str, name: str, payload: Payload, what: str,
            ttl: float | None = None) -> BlobRef:
        """Store ``payload`` (``what`` it is, for errors) as the pool's blob ``name``; the
        client gives ``ttl``, its pool's, in seconds. Raises
        :class:`~distpool.errors.PayloadTooLargeError` if Redis has no room for it."""
        key = keys.blobs(pool_id)
        expiry: tuple[Any, ...] = (
            ("PEXPIRE", key, max(1, int(ttl * 1000))) if ttl is not None
            else ("EVAL", _KEEP_WITH_POOL, 2, key, keys.live(pool_id), ORPHAN_TTL_MS))
        try:
            parts = enumerate(payload.parts(PART_SIZE))
            then: list[tuple[Any, ...]] = [expiry]  # with the first parts: nothing may linger
            while True:
                batch: list[tuple[tuple[str, ...], Frame]] = [
                    (("HSET", key, _field(name, index)), part)
                    for index, part in itertools.islice(parts, PARTS_PER_ROUND_TRIP)]
                if not batch:
                    break
                self._connection.write_values(batch, then)
                then = []
        except BaseException as exc:
            try:
                self.delete(pool_id, [(name, payload.nbytes)])
            except Exception:  # the connection is down: the expiry removes what was written
                pass
            if isinstance(exc, ReplyError) and exc.code == "OOM":
                raise PayloadTooLargeError(
                    f"{what}, {describe_size(payload.nbytes)}, does not fit in the result "
                    f"store: {self._memory_limit()}; Redis said: {exc}") from None
            raise
        return payload.ref()

    def get(self, pool_id: str, name: str, ref: BlobRef) -> Payload:
        """The pool's blob ``name``, checked against ``ref``; raises
        :class:`~distpool.errors.EnvelopeError` if it is missing, incomplete, longer than
        ``ref`` says, or not what ``ref`` hashes."""
        key = keys.blobs(pool_id)
        # The size is signed (every reference is authenticated before it is fetched).
        data = bytearray(ref.size)
        view = memoryview(data)
        offset = index = 0
        while offset < ref.size:
            count = min(READ_AHEAD, -(-(ref.size - offset) // PART_SIZE))
            try:
                sizes = self._connection.read_values_into(
                    [("HGET", key, _field(name, index + n)) for n in range(count)],
                    view[offset:])
            except ValueError:
                raise EnvelopeError(f"blob {ref.digest[:16]} is longer than the "
                                    f"{describe_size(ref.size)} its reference gives") from None
            for size in sizes:
                if not size:
                    state = "missing" if offset == 0 else f"cut short after {offset:,} bytes"
                    raise EnvelopeError(f"blob {ref.digest[:16]} of "
                                        f"{describe_size(ref.size)} is {state}: it expired, "
                                        "or its pool ended")
                offset += size
            index += count
        if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), ref.digest):
            raise EnvelopeError(f"blob {ref.digest[:16]} of {describe_size(ref.size)} does "
                                "not match its hash: it was changed in the store")
        return Payload([data])

    def take(self, pool_id: str, name: str, ref: BlobRef) -> Payload:
        """:meth:`get`, then delete the blob."""
        try:
            return self.get(pool_id, name, ref)
        finally:
            self.delete(pool_id, [(name, ref.size)], wait=False)

    def delete(self, pool_id: str, blobs: Iterable[tuple[str, int]],
               wait: bool = True) -> None:
        """Delete the pool's blobs, given as ``(name, size)``; with ``wait`` False, without
        waiting for Redis's answer (read with the connection's next command)."""
        fields = [_field(name, index) for name, size in blobs
                  for index in range(max(1, -(-size // PART_SIZE)))]
        if not fields:
            return
        command: list[tuple[Any, ...]] = [("HDEL", keys.blobs(pool_id), *fields)]
        if wait:
            self._connection.run(command)
        else:
            self._connection.send(command)

    def _memory_limit(self) -> str:
        try:
            [info] = self._connection.run([("INFO", "memory")])
        except Exception:
            return "Redis is out of memory"
        values = dict(line.split(":", 1) for line in info.decode().splitlines()
                      if ":" in line)
        return (f"Redis uses {values.get('used_memory_human', '?')} of its maxmemory "
                f"{values.get('maxmemory_human', '?')}")


def _field(name: str, index: int) -> str:
    return f"{name}/{index}"
