"""The client's watch on its messages in flight: the second line of defence against loss.

Workers keep a claim on each message they run, renewed while it runs and marked done with
its results (:mod:`distpool.worker.claims`). A message is *orphaned* while nobody's claim
on it moves: not claimed at all (it waits in the queue, or the broker lost it), or claimed
by a holder that stopped renewing (it died after another delivery of the message had been
dropped in its favour). The brokers' own recovery (held lists, holds that lapse, RabbitMQ's
re-queueing) brings such messages back within about ``worker_lost_timeout``; a message still
orphaned after ``resend_after`` is sent again, with the same id, and again after twice that,
and so on (a message that merely waits behind other pools' work costs a skipped copy now and
then). Whichever copy is claimed first runs; the others are dropped, and the engine delivers
each result once.

When no worker at all is registered for the queue, the orphans' tasks fail after
``no_worker_timeout`` with :class:`~distpool.errors.BrokerUnavailableError`, instead of
waiting for ever: the workers died, or cannot reach the broker (a Redis at ``maxclients``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..wire.envelope import MESSAGE_DONE as DONE
from ..wire.envelope import TaskEnvelope

#: The longest wait between two sends of an orphaned message.
MAX_RESEND_INTERVAL = 3600.0


@dataclass(eq=False)
class _Watched:
    envelopes: Sequence[TaskEnvelope]
    claim: str | None = None  # as last seen
    moved_at: float = 0.0  # when it was sent, or its claim last moved
    resend_after: float = 0.0


@dataclass
class Verdict:
    """What to do with the messages checked: send these again, fail those."""

    resend: list[Sequence[TaskEnvelope]] = field(default_factory=list)
    fail: list[Sequence[TaskEnvelope]] = field(default_factory=list)


class MessageWatch:
    """Tracks the pool's messages in flight; not thread-safe (the engine holds its lock)."""

    def __init__(self, resend_after: float, no_worker_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._resend_after = resend_after
        self._no_worker_timeout = no_worker_timeout
        self._clock = clock
        self._messages: dict[str, _Watched] = {}
        self._no_worker_since: float | None = None

    def sent(self, message_id: str, envelopes: Sequence[TaskEnvelope]) -> None:
        self._messages[message_id] = _Watched(envelopes, None, self._clock(), self._resend_after)

    def finished(self, message_id: str) -> None:
        self._messages.pop(message_id, None)

    def clear(self) -> None:
        self._messages.clear()

    def due(self) -> list[str]:
        """The messages whose claims to look at now: those orphaned for a while."""
        now = self._clock()
        horizon = min(self._resend_after, self._no_worker_timeout)
        return [message_id for message_id, watched in self._messages.items()
                if watched.claim != DONE and now - watched.moved_at >= horizon]

    def judge(self, claims: dict[str, str | None], workers: int) -> Verdict:
        """Given the current claims of the messages :meth:`due` named, and how many worker
        processes are registered now, say which to send again and which to fail."""
        now = self._clock()
        verdict = Verdict()
        orphans = []
        for message_id, claim in claims.items():
            watched = self._messages.get(message_id)
            if watched is None:
                continue
            if claim != watched.claim:  # claimed, renewed, or done since: alive
                watched.claim, watched.moved_at = claim, now
                watched.resend_after = self._resend_after
            elif claim != DONE:
                orphans.append((message_id, watched))
        if not orphans:
            self._no_worker_since = None
            return verdict
        if workers > 0:
            self._no_worker_since = None
        elif self._no_worker_since is None:
            self._no_worker_since = now
        if (self._no_worker_since is not None
                and now - self._no_worker_since >= self._no_worker_timeout):
            verdict.fail = [watched.envelopes for _, watched in orphans]
            return verdict
        for _, watched in orphans:
            if now - watched.moved_at >= watched.resend_after:
                verdict.resend.append(watched.envelopes)
                watched.moved_at = now
                watched.resend_after = min(2 * watched.resend_after, MAX_RESEND_INTERVAL)
        return verdict
