"""A named run's work in flight when its client died, taken over by the run's next client.

On a cluster, a named run's pool stays live for the run's resume window (``resume_window``,
an hour by default) instead of ``pool_ttl``: once its client has died, the workers go on
with its messages, and push their results to the pool's list, where they wait. The client
journals the pool's id, and each message it sends: which call and places of the run its
tasks carry, and the message as it travels. The run's next client, finding that pool still
live, takes it over instead of starting another::

    journal  ("pool", id)  ("sent", message id, its tasks' calls and places, the message)
       │
    Pool() ── the messages sent whose results the journal lacks
       ├─ their states in Redis (first), then the records the dead client left (received,
       │  not acknowledged; pushed since)
       ├─ a record found: its results journaled at once
       ├─ done, but no record left (taken, and lost with its client): computed again
       └─ the others: in flight in the new engine under their own ids (the watch sends a
          lost one again), their results journaled as they come, and handed to the rerun's
          caller waiting for those items (:meth:`Handover.wait_for`)

The rerun's jobs are numbered after the earlier clients', so no task id is used twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

from ..errors import EnvelopeError, RemoteTraceback
from ..wire import serialization
from ..wire.envelope import MESSAGE_DONE, ResultRecord, TaskEnvelope
from ..wire.payload import Payload
from ..wire.signing import Signer
from .results import JobResult
from .tasks import Task

RECORD_POOL = "pool"
RECORD_SENT = "sent"


class SentTask(NamedTuple):
    """A task as a named run journals it when it is sent: its job and chunk, and the call
    and the places in that call (with their arguments' digests) of the items it carries."""

    job: int
    chunk: int
    call: int
    positions: list[int]
    digests: list[bytes]


class RunHooks(NamedTuple):
    """What a named run on a cluster asks of its pool's engine: job numbers that follow
    those of the run's earlier clients, the pool kept live for the resume window, and
    ``sent`` told of each message, with its tasks and the message as it travels, before it
    is sent."""

    first_job: int
    sent: Callable[[list[tuple[list[Task], list[Any]]]], None]


class _Waiter(NamedTuple):
    target: JobResult
    single: bool  # an apply's: its outcome is the value itself, not a one-item list


#: Journals a task's result: its call, its items' places and digests, and what it returned.
Record = Callable[[int, list[int], list[bytes], Any], object]


class Handover:
    """What the earlier clients of a named run sent, as their journal says, and the items
    of the rerun that wait for those messages' results. Not thread-safe: the run's lock
    guards it."""

    def __init__(self) -> None:
        #: The pool of the run's last client on a cluster, if it had one.
        self.pool_id: str | None = None
        #: The first job number that no earlier client of the run used.
        self.next_job = 0
        self._sent: dict[str, tuple[list[SentTask], list[dict[str, Any]]]] = {}
        #: (call, place) -> the digest of the item an adopted task carries
        self._pending: dict[tuple[int, int], bytes] = {}
        self._waiters: dict[tuple[int, int], _Waiter] = {}

    def read(self, record: tuple[Any, ...]) -> None:
        """Take in a journal record of :data:`RECORD_POOL` or :data:`RECORD_SENT`."""
        if record[0] == RECORD_POOL:
            self.pool_id = record[1]
            return
        _, message_id, tasks, wire = record
        tasks = [SentTask(*task) for task in tasks]
        self._sent[message_id] = (tasks, wire)
        self.next_job = max(self.next_job, *(task.job + 1 for task in tasks))

    @staticmethod
    def sent_record(message_id: str, tasks: Sequence[SentTask],
                    wire: list[dict[str, Any]]) -> tuple[Any, ...]:
        return (RECORD_SENT, message_id, [tuple(task) for task in tasks], wire)

    def unanswered(self, answered: Callable[[SentTask], bool]) -> list[str]:
        """The messages sent with a task whose items the journal lacks (``answered`` says
        which it has); the others are forgotten."""
        for message_id, (tasks, _) in list(self._sent.items()):
            if all(answered(task) for task in tasks):
                del self._sent[message_id]
        return list(self._sent)

    def take_over(self, pool_id: str, states: dict[str, str | None], left: Sequence[bytes],
                  signer: Signer, load: Callable[[ResultRecord], Payload], record: Record,
                  labels: Callable[[int], str | None],
                  ) -> tuple[list[list[Task]], dict[int, list[SentTask]]]:
        """Given the states of the :meth:`unanswered` messages (read first) and the records
        the dead client left (read after), journal (``record``) the results those records
        hold (``load`` reads a record's payload), and return the messages to keep in flight,
        their tasks rebuilt (named by the ``labels`` of their calls), with their tasks by
        job."""
        sent = {_wire_id(pool_id, task): task
                for tasks, _ in self._sent.values() for task in tasks}
        landed: set[str] = set()
        for raw in left:
            try:
                found = ResultRecord.from_bytes(raw, signer, pool_id)
            except EnvelopeError:
                continue
            task = sent.get(found.task_id)
            if task is None:
                continue
            landed.add(found.task_id)
            if found.ok:  # (a failure is computed again, as any journal's)
                try:
                    value = serialization.loads(load(found))
                except Exception:  # computed again
                    continue
                record(task.call, task.positions, task.digests, value)
        messages: list[list[Task]] = []
        jobs: dict[int, list[SentTask]] = {}
        for message_id, (tasks, wire) in list(self._sent.items()):
            answered = any(_wire_id(pool_id, task) in landed for task in tasks)
            if answered or states.get(message_id) == MESSAGE_DONE:
                del self._sent[message_id]  # answered, or its answer lost with its client
                continue
            messages.append([Task(task.job, task.chunk,
                                  _envelope(message, signer, labels(task.call)))
                             for task, message in zip(tasks, wire)])
            for task in tasks:
                jobs.setdefault(task.job, []).append(task)
                for position, argument_digest in zip(task.positions, task.digests):
                    self._pending[(task.call, position)] = argument_digest
        return messages, jobs

    @property
    def pending(self) -> bool:
        """Whether any item is carried by an adopted task whose outcome has not come."""
        return bool(self._pending)

    def wait_for(self, call: int, position: int, argument_digest: bytes, target: JobResult,
                 single: bool) -> bool:
        """Whether an adopted task carries this item, with the same arguments: its outcome
        then goes to ``target`` when it comes."""
        if self._pending.get((call, position)) != argument_digest:
            return False
        self._waiters[(call, position)] = _Waiter(target, single)
        return True

    def arrived(self, task: SentTask) -> list[tuple[int, _Waiter]]:
        """An adopted task's outcome came: the offsets in it of the items waited for, and
        their waiters."""
        waiting = []
        for offset, position in enumerate(task.positions):
            self._pending.pop((task.call, position), None)
            waiter = self._waiters.pop((task.call, position), None)
            if waiter is not None:
                waiting.append((offset, waiter))
        return waiting


class AdoptedJob:
    """The result object of a job of an earlier client's, whose tasks the rerun took over:
    each chunk's outcome goes to ``landed``, and the job is done once all have come."""

    remote_traceback: ClassVar[type[Exception]] = RemoteTraceback
    quiet = False

    def __init__(self, job: int, chunks: list[SentTask],
                 landed: Callable[[SentTask, bool, Any], None],
                 done: Callable[[int], None]) -> None:
        self._job = job
        self._chunks = {task.chunk: task for task in chunks}
        self._landed = landed
        self._done = done

    def set_outcome(self, index: int, success: bool, value: Any) -> None:
        task = self._chunks.pop(index, None)
        if task is not None:
            self._landed(task, success, value)
        if not self._chunks:
            self._done(self._job)

    def input_failed(self, sent: int, exc: BaseException) -> None:
        pass  # (it reads no input)

    def abort(self, exc: BaseException) -> None:
        for index in list(self._chunks):
            self.set_outcome(index, False, exc)


def _wire_id(pool_id: str, task: SentTask) -> str:
    return f"{pool_id}:{task.job}:{task.chunk}"


def _envelope(wire: dict[str, Any], signer: Signer, label: str | None) -> TaskEnvelope:
    """A journaled message's envelope, checked as a worker checks it (its expiry aside: it
    is signed afresh when sent again)."""
    return dataclasses.replace(TaskEnvelope.from_wire(wire, signer, now=0.0), label=label)
