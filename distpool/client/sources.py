"""What a pool sends next: its jobs' tasks, in submission order, batched where short.

A job's *source* is an iterator of its tasks (:func:`map_tasks`, :func:`lazy_tasks`,
:func:`gated`), so a map serialises its chunks only as the engine sends them, and ``imap``
reads its input only as slots free up, no further than ``buffersize`` chunks ahead of what
its caller has consumed. Only the engine's dispatcher thread pulls tasks; other threads add
and drop jobs, under the engine's lock, which :class:`Sources` shares.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .batching import MAX_BATCH_BYTES, TaskTimes, function_key, split_evenly
from .results import ApplyResult, IMapIterator, JobResult
from .shipping import Serialised, Serialiser
from .tasks import Task, TaskMaker

Source = Iterator[Task]


class Consumer(Protocol):
    """A result its caller takes chunk by chunk (imap's iterators)."""

    @property
    def chunks_consumed(self) -> int: ...


@dataclass(frozen=True)
class ReadAhead:
    """At most ``limit`` of a job's tasks may be sent ahead of what ``consumer`` has taken."""

    limit: int
    consumer: Consumer


@dataclass(eq=False)
class Job:
    """A job's tasks waiting to be sent, and how far ahead of its consumer they may go."""

    tasks: Source
    result: JobResult
    read_ahead: ReadAhead | None
    sent: int = 0

    def may_send(self, closing: bool) -> bool:
        # Once the pool is closed, join() must be able to finish without a consumer.
        ahead = self.read_ahead
        return (ahead is None or closing
                or self.sent - ahead.consumer.chunks_consumed < ahead.limit)


class Sources:
    """The jobs whose tasks wait to be sent. ``closing`` says whether the pool is closed
    (read under ``lock``); ``failed`` is told of a job whose source raised, which is dropped,
    as multiprocessing's task handler fails such a job and goes on."""

    def __init__(self, lock: threading.Condition, closing: Callable[[], bool],
                 failed: Callable[[Job, Exception], None]) -> None:
        self._lock = lock
        self._closing = closing
        self._failed = failed
        self._jobs: collections.deque[Job] = collections.deque()
        # Pulled from a source but not sent yet; touched by the dispatching thread only.
        self._lookahead: collections.deque[Task] = collections.deque()
        self._stopped = False
        #: How long tasks of each function run, which sets how many share a message.
        self.task_times = TaskTimes()

    # -- under the lock ------------------------------------------------------------------

    def add(self, job: Job) -> None:
        self._jobs.append(job)

    def stop(self) -> None:
        """Drop every job: the pool was terminated."""
        self._jobs.clear()
        self._stopped = True

    def ready(self) -> bool:
        """Whether a task may be sent now."""
        return bool(self._lookahead) or self._sendable() is not None

    def exhausted(self) -> bool:
        return not (self._jobs or self._lookahead)

    # -- the dispatching thread (see Engine), without the lock -----------------------------

    def next_messages(self, free: int) -> list[list[Task]]:
        """Up to ``free`` messages' worth of tasks, batched where tasks are short."""
        first = self._pull()
        if first is None:
            return []
        function = function_key(first.envelope.function)
        # A worker's process is replaced only between messages: a pool with
        # maxtasksperchild sends one task a message, so no process runs more than that.
        per_message = (1 if first.envelope.max_tasks is not None
                       else self.task_times.batch_size(function))
        tasks = [first]
        data = first.envelope.arguments.size
        while len(tasks) < free or (len(tasks) < free * per_message
                                    and data < free * MAX_BATCH_BYTES):
            task = self._pull()
            if task is None:
                break
            if per_message > 1 and function_key(task.envelope.function) != function:
                self._lookahead.appendleft(task)  # batches hold one function
                break
            tasks.append(task)
            data += task.envelope.arguments.size
        return split_evenly(tasks, free)

    def _pull(self) -> Task | None:
        if self._lookahead:
            return self._lookahead.popleft()
        while True:
            with self._lock:
                job = None if self._stopped else self._sendable()
                if job is None:
                    return None
            try:
                # Outside the lock: a lazy source serialises user input as it goes.
                task = next(job.tasks, None)
            except Exception as exc:
                self._drop(job)
                self._failed(job, exc)
                continue
            if task is not None:
                job.sent += 1
                return task
            self._drop(job)

    def _drop(self, job: Job) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)

    def _sendable(self) -> Job | None:
        """The first job, in submission order, that may send now (called under the lock)."""
        closing = self._closing()
        for job in self._jobs:
            if job.may_send(closing):
                return job
        return None


def map_tasks(tasks: TaskMaker, serialiser: Serialiser, job: int, kind: str,
              function: Serialised, label: str, items: Sequence[Any],
              chunksize: int) -> Source:
    """A map's source: its chunks of ``items``, each serialised as the engine asks for it.
    An item that cannot be serialised raises here, which fails the map (see
    :class:`Sources`)."""
    for index, chunk in enumerate(chunked(iter(items), chunksize)):
        yield tasks.task(job, index, kind, function, serialiser.chunk(chunk, index * chunksize),
                         label)


def lazy_tasks(tasks: TaskMaker, serialiser: Serialiser, job: int, result: IMapIterator[Any],
               label: str, function: Serialised, items: Iterator[Any],
               chunksize: int) -> Source:
    """imap's source: reads and serialises the input only as the engine asks.

    An exception from the input (or from serialising it) becomes the failure of the chunk
    where it happened and ends the input, as in multiprocessing.
    """
    index = count = 0
    chunks = chunked(items, chunksize)
    while True:
        try:
            chunk = next(chunks, None)
            if chunk is None:
                break
            data = serialiser.chunk(chunk, count)
        except Exception as exc:
            result.set_outcome(index, False, exc)
            index += 1
            break
        yield tasks.task(job, index, "map", function, data, label)
        index += 1
        count += len(chunk)
    result.input_ended(index, count)


def gated(task: Task, result: ApplyResult[Any], start: Callable[[], bool]) -> Source:
    """The source of one task that is sent only if ``start()`` says so, just before: else
    its result fails with ``CancelledError`` (``Future.cancel``)."""
    if start():
        yield task
    else:
        result.abort(concurrent.futures.CancelledError())


def chunked(items: Iterator[Any], size: int) -> Iterator[tuple[Any, ...]]:
    """``items`` in tuples of ``size`` (the last may be shorter)."""
    if size < 1:
        return
    while True:
        chunk = tuple(itertools.islice(items, size))
        if not chunk:
            return
        yield chunk
