"""How often a supervisor may restart a process that keeps dying."""

from __future__ import annotations

import time

#: Restarts allowed per minute before a supervisor gives up on a process.
MAX_RESTARTS_PER_MINUTE = 5


class RestartBudget:
    """Allows a restart unless there were already too many in the last minute."""

    def __init__(self, per_minute: int = MAX_RESTARTS_PER_MINUTE) -> None:
        self._per_minute = per_minute
        self._recent: list[float] = []

    def allow(self) -> bool:
        now = time.monotonic()
        self._recent = [t for t in self._recent if now - t < 60] + [now]
        return len(self._recent) <= self._per_minute
