"""How often a supervisor may restart a process that keeps dying."""

from __future__ import annotations

import sys
import time
from typing import Callable

from ...retry import RetryPolicy

#: Restarts allowed per minute before a supervisor gives up on a process.
MAX_RESTARTS_PER_MINUTE = 5

#: Backoff of a process that keeps failing: the first restart after this long (seconds),
BACKOFF_FIRST = 1.0
#: each next one after twice as long as the one before, up to this long;
BACKOFF_CAP = 60.0
#: and after a process has stayed up this long, its next failure counts as a first again.
STABLE_AFTER = 60.0


class RestartBudget:
    """Allows a restart unless there were already too many in the last minute."""

    def __init__(self, per_minute: int = MAX_RESTARTS_PER_MINUTE) -> None:
        self._per_minute = per_minute
        self._recent: list[float] = []

    def allow(self) -> bool:
        now = time.monotonic()
        self._recent = [t for t in self._recent if now - t < 60] + [now]
        return len(self._recent) <= self._per_minute


class Backoff:
    """Exponential backoff for restarting one process that keeps failing.

    The n-th failure in a row waits ``first * 2 ** (n - 1)`` seconds, at most ``cap``, before
    the restart (a :class:`~distpool.retry.RetryPolicy` without jitter, of retries without
    end): a process that cannot start costs a fork a minute, not a fork a moment. A process
    that stayed up ``stable_after`` seconds was healthy, so its next failure is a first one
    again. ``clock`` is injected for tests.
    """

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP,
                 stable_after: float = STABLE_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = RetryPolicy(retries=sys.maxsize, base=first, cap=cap, jitter=False)
        self.stable_after = stable_after
        self._clock = clock
        #: Failures in a row, none after a stable run.
        self.failures = 0
        self._up_since: float | None = None

    def started(self) -> None:
        """A process was started now."""
        self._up_since = self._clock()

    def ended(self) -> None:
        """The process ended, but not by failing (it chose to, or its task killed it): it
        neither counts as a failure nor as a stable run."""
        self._up_since = None

    def failed(self) -> float:
        """The process failed now: the seconds to wait before starting the next one."""
        if self.stable():
            self.failures = 0
        self._up_since = None
        self.failures += 1
        return self.delay()

    def delay(self) -> float:
        """The wait before the restart that follows the latest failure (0 before any)."""
        if self.failures == 0:
            return 0.0
        return self.policy.delay(self.failures - 1)

    def stable(self) -> bool:
        """Whether the process runs now and has been up ``stable_after`` seconds."""
        return (self._up_since is not None
                and self._clock() - self._up_since >= self.stable_after)

    def failing(self, failures: int) -> bool:
        """Whether it has failed at least ``failures`` times in a row and is not up and
        stable since."""
        return self.failures >= failures and not self.stable()
