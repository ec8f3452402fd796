"""The tasks a pool has sent and not heard back of: what frees a slot, and what a result
record is matched with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .batching import FunctionKey, function_key
from .tasks import Task


class Sent(NamedTuple):
    """A task sent: its job and chunk, its message, and its function (for run times)."""

    job: int
    chunk: int
    message_id: str
    function: FunctionKey


class Flight:
    """Tasks sent, by their wire names, and how many of each message's have not reported.
    A message's id is that of its first task. Not thread-safe: the engine's lock guards it."""

    def __init__(self) -> None:
        self._tasks: dict[str, Sent] = {}
        self._unreported: dict[str, int] = {}

    def add(self, message_id: str, tasks: Sequence[Task]) -> None:
        """The tasks of message ``message_id`` were sent (or are about to be)."""
        self._unreported[message_id] = len(tasks)
        for task in tasks:
            self._tasks[task.envelope.task_id] = Sent(
                task.job, task.index, message_id, function_key(task.envelope.function))

    def land(self, task_id: str) -> tuple[Sent, bool] | None:
        """Take task ``task_id`` out of flight: it, and whether that was the last of its
        message's; None if it is not in flight (reported already, or never sent)."""
        task = self._tasks.pop(task_id, None)
        if task is None:
            return None
        left = self._unreported[task.message_id] - 1
        if left:
            self._unreported[task.message_id] = left
        else:
            del self._unreported[task.message_id]
        return task, not left

    def messages(self) -> int:
        return len(self._unreported)

    def message_ids(self) -> list[str]:
        return list(self._unreported)

    def task_ids(self) -> list[str]:
        return list(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def clear(self) -> None:
        self._tasks.clear()
        self._unreported.clear()
