"""How long to wait before trying again: one policy for every command or publish that is
retried, and for restarting a process that keeps failing."""

from __future__ import annotations

import random
from typing import Any, NamedTuple


class RetryPolicy(NamedTuple):
    """At most ``retries`` tries after the first, the n-th after ``base * 2 ** n`` seconds,
    at most ``cap`` (with ``jitter``, a random part of that, so that processes that failed
    together do not try again together)."""

    retries: int
    base: float = 0.01
    cap: float = 1.0
    jitter: bool = True

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row."""
        longest = min(self.cap, self.base * 2 ** min(failures, 64))
        return random.uniform(0, longest) if self.jitter else longest

    def as_kombu(self) -> dict[str, Any]:
        """The policy as kombu's ``ensure`` takes one (the AMQP publisher's): the same tries
        and bounds, the waits growing by steps of ``base`` (kombu's are linear)."""
        return {"max_retries": self.retries, "interval_start": self.base,
                "interval_step": self.base, "interval_max": self.cap}
