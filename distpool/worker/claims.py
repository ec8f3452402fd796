"""Which worker process runs a message: a claim per message in the result store.

A broker may hand a message out again while its first holder still runs it: RabbitMQ
re-queues the unacknowledged messages of a channel it lost, and on Redis a channel closed by
a dropped connection, a hold that lapsed while its node was frozen, or a held list given
back (:mod:`distpool.brokers.held_messages`) do the same. Whoever receives a message claims
it before running it (in the pool's ``messages`` hash of the result store, see
:mod:`distpool.store.redis_store`), renews the claim while it runs, and marks it ``done``
with its results. A receiver that finds the message claimed:

* ``done``: does not run it again (nor when its pool has ended);
* by a process that is gone (same host, no such process; or its claim lapsed, unrenewed):
  takes the claim over and runs it; that is how a task whose process died runs again;
* by a live process (its claim is renewed while the receiver watches): leaves it to that
  process. Should that process die later, the client's watch on its messages sends the
  message again (``Engine``), so nothing waits forever.

A running holder that finds its claim taken (it was frozen past the claim's life, and the
message went to another) stops its task: only one copy runs on.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import NamedTuple

from ..platform import process_exists
from ..store.redis_store import POOL_GONE, RedisStore
from ..wire.envelope import MESSAGE_DONE

logger = logging.getLogger("distpool")

#: How often a receiver looks again at a claim held by another process.
POLL_INTERVAL = 0.25


class Acquired(NamedTuple):
    """A claim this process holds now. ``interrupted``: the process that held it before and
    never finished (it died, or froze past its claim's life), if any: this run is another
    attempt."""

    interrupted: str | None


class Renewal(enum.Enum):
    """What renewing a running message's claim found."""

    OURS = "ours"
    #: Another process holds it: this one was frozen past its claim's life.
    TAKEN = "taken"
    #: It was run to the end: by this process, if its run has just pushed its results (the
    #: renewal raced the push), or by another.
    DONE = "done"


def process_holder() -> str:
    """This worker process's id, ``host:pid:random``: the holder of its claims, and of its
    held list on a Redis broker. Made once per process (a forked child makes its own)."""
    if _holder[0] != os.getpid():
        _holder[:] = [os.getpid(), f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"]
    return str(_holder[1])


_holder: list[object] = [None, ""]


class Claims:
    """The claims of one worker process, whose id is :attr:`holder` (this process's, unless
    given)."""

    def __init__(self, store: RedisStore, ttl: float, holder: str | None = None) -> None:
        self._store = store
        self.ttl = ttl
        #: Renew a running message's claim this often: three tries before it lapses.
        self.renew_interval = ttl / 3
        self._host = socket.gethostname()
        self.holder = holder or process_holder()

    def acquire(self, message_id: str) -> Acquired | None:
        """Claim the message; None when another process runs it, or ran it to the end."""
        seen_left: int | None = None
        while True:
            found = self._store.claim(message_id, self.holder, self.ttl)
            if found.outcome == "claimed":
                return Acquired(found.other)
            if found.outcome == MESSAGE_DONE:
                logger.info("message %s was run to the end already; not running it again",
                            message_id)
                return None
            if found.outcome == POOL_GONE:
                logger.info("skipped message %s: its pool ended", message_id)
                return None
            owner = found.other or ""
            if owner == self.holder:
                # A second delivery of what this process runs (seen across a RabbitMQ
                # restart): never a second run. Were it a run that ended unfinished, its
                # claim lapses, unrenewed, and the client sends the message again.
                logger.warning("message %s is being run by this process; not running it "
                               "twice", message_id)
                return None
            if self._is_gone(owner) and self._store.take_over(message_id, owner, self.holder,
                                                              self.ttl):
                return Acquired(owner)
            if seen_left is not None and found.left_ms > seen_left:  # renewed: it lives
                logger.warning("message %s is being run by %s; not running it twice",
                               message_id, owner)
                return None
            seen_left = found.left_ms
            time.sleep(POLL_INTERVAL)

    def acquire_soon(self, message_id: str) -> Callable[[], bool | None]:
        """Claim a message delivered for the first time (by a broker that flags second
        deliveries), without waiting for Redis: the returned callable says, after the run,
        whether the claim was ours, or None if that is unknown (its connection failed; the
        renewals claim it again meanwhile). Nobody can have claimed such a message unless the
        broker gave it to two consumers (a frozen one's held list put back, see
        held_messages), so the run does not wait on the claim's round trip; a run that finds
        it was not ours drops its results."""
        outcome = self._store.claim_soon(message_id, self.holder, self.ttl)

        def ours() -> bool | None:
            try:
                return outcome().outcome == "claimed"
            except Exception:
                return None

        return ours

    def renew(self, message_id: str) -> Renewal:
        """Renew the claim of a running message. (A pool that ended is the watchdog's to see,
        by its liveness key: such a claim counts as still ours.)"""
        found = self._store.claim(message_id, self.holder, self.ttl, renewal=True)
        if found.outcome == MESSAGE_DONE:
            return Renewal.DONE
        if found.outcome == POOL_GONE or (found.outcome == "claimed" and found.other is None):
            return Renewal.OURS
        return Renewal.TAKEN

    def _is_gone(self, owner: str) -> bool:
        """Whether ``owner`` is a process of this host that no longer exists. Elsewhere,
        only its claim's lapse tells."""
        host, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if host != self._host or not pid_text.isdigit():
            return False
        return not process_exists(int(pid_text))
