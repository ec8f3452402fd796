"""Result objects handed to the caller: AsyncResult, MapResult and the imap iterators.

They follow ``multiprocessing.pool`` (CPython 3.8+) closely: callbacks run in the pool's
result-delivery thread *before* waiters are woken; a map is ready only once every chunk has
reported, and then fails with the first error received; the iterators raise each failed item
in place.

The pool's engine sees them as :class:`JobResult`: it delivers outcomes through
``set_outcome(index, success, value)`` (``index`` is the chunk number), ``input_failed`` when
the job's input raised, and ``abort`` on terminate; the pool tells iterators whose input length
is not known up front ``input_ended``. These are for the pool only, as ``Future.set_result`` is
for executors: not part of multiprocessing's API. ``on_done`` tells the engine that a job needs
no more deliveries.

Deliveries can come from several threads (the delivery thread; the dispatcher, which reads
an imap's input; the caller, on terminate), so each object changes its state under its own
lock, and the one delivery that completes it is the only one to finish it: callbacks run
exactly once, and never for a result that was already complete.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Any, Callable, ClassVar, Generic, Optional, Protocol, TypeVar

from .. import platform
from ..errors import RemoteTraceback, TimeoutError

T = TypeVar("T")
Callback = Optional[Callable[[Any], object]]
OnDone = Callable[[int], None]


class JobResult(Protocol):
    """What the engine and the delivery thread see of a job's result object."""

    #: Completing it runs no user code (no callback, no progress display): it may be done
    #: on the collector thread, without a hop to the delivery thread.
    @property
    def quiet(self) -> bool: ...
    #: Made of a task's formatted traceback, as the ``__cause__`` of its exception.
    remote_traceback: ClassVar[type[Exception]]
    def set_outcome(self, index: int, success: bool, value: Any) -> None: ...
    def input_failed(self, sent: int, exc: BaseException) -> None: ...
    def abort(self, exc: BaseException) -> None: ...


class ProgressDisplay(Protocol):
    """Something that shows progress, such as a tqdm bar (see distpool.progress)."""

    def update(self, n: int) -> object: ...
    def set_total(self, total: int) -> None: ...
    def close(self) -> None: ...


class Progress:
    """How many items of a job are done (``completed``) out of how many (``total``, None
    while an imap's input is still being read); fed by the pool's collector thread."""

    def __init__(self, total: int | None, display: ProgressDisplay | None = None) -> None:
        self.completed = 0
        self.total = total
        self._display = display

    def __repr__(self) -> str:
        return f"<Progress {self.completed}/{self.total if self.total is not None else '?'}>"

    def _advance(self, items: int) -> None:
        self.completed += items
        if self._display is not None:
            self._display.update(items)

    def _set_total(self, total: int) -> None:
        self.total = total
        if self._display is not None:
            self._display.set_total(total)

    def _close(self) -> None:
        if self._display is not None:
            self._display.close()


class ApplyResult(Generic[T]):
    """The result of ``apply_async``; ``multiprocessing.pool.AsyncResult`` by another name."""

    remote_traceback: ClassVar[type[Exception]] = RemoteTraceback

    def __init__(self, job: int, on_done: OnDone, callback: Callback = None,
                 error_callback: Callback = None, total: int = 1,
                 display: ProgressDisplay | None = None) -> None:
        self._job = job
        self._on_done = on_done
        self._callback = callback
        self._error_callback = error_callback
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._claimed = False  # completion claimed by a delivery, under the lock
        self._success = True
        self._value: Any = None
        #: Items done out of how many: 0 or 1 of 1 here, the input's items for a map.
        self.progress = Progress(total, display)
        # Completing it runs no user code: no callback, no display (see .delivery).
        self.quiet = callback is None and error_callback is None and display is None

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        platform.waited(self._event.wait, timeout)  # (Ctrl-C must reach a waiting caller)

    def get(self, timeout: float | None = None) -> T:
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        if self._success:
            return self._value  # type: ignore[no-any-return]
        raise self._value

    def set_outcome(self, index: int, success: bool, value: Any) -> None:
        with self._lock:
            if self._claimed:
                return
            self._claimed = True
            self._success, self._value = success, value
            self.progress._advance(1)
        self._finish()

    def abort(self, exc: BaseException) -> None:
        """Fail now, whatever is still outstanding (the pool was terminated)."""
        with self._lock:
            if self._claimed:
                return
            self._claimed = True
            self._success, self._value = False, exc
        self._finish()

    def input_failed(self, sent: int, exc: BaseException) -> None:
        """Preparing the job raised ``exc`` after ``sent`` of its tasks were sent: the job
        fails with it, as multiprocessing's task handler fails a task it cannot send."""
        if sent == 0:  # else its one task went out: its own result stands
            self.set_outcome(0, False, exc)

    def _finish(self) -> None:
        try:
            if self._success and self._callback is not None:
                self._callback(self._value)
            elif not self._success and self._error_callback is not None:
                self._error_callback(self._value)
        finally:
            # A raising callback must not leave waiters hanging; distpool logs it.
            self.progress._close()
            self._event.set()
            self._on_done(self._job)


AsyncResult = ApplyResult


class MapResult(ApplyResult[list[T]]):
    """The result of ``map_async``/``starmap_async``: chunks fill a list in input order."""

    def __init__(self, job: int, on_done: OnDone, length: int, chunksize: int,
                 callback: Callback = None, error_callback: Callback = None,
                 display: ProgressDisplay | None = None) -> None:
        super().__init__(job, on_done, callback, error_callback, length, display)
        self._value = [None] * length
        self._length = length
        self._chunksize = chunksize
        self._chunks = self._chunks_left = -(-length // chunksize) if chunksize > 0 else 0
        if self._chunks_left == 0:
            self._claimed = True
            self._finish()

    def set_outcome(self, index: int, success: bool, value: Any) -> None:
        with self._lock:
            if self._claimed:
                return
            self._chunks_left -= 1
            start = index * self._chunksize
            self.progress._advance(min(self._chunksize, self._length - start))
            if success and self._success:
                self._value[start:start + self._chunksize] = value
            elif not success:
                self._keep_first_error(value)
            if self._chunks_left:
                return
            self._claimed = True
        self._finish()

    def input_failed(self, sent: int, exc: BaseException) -> None:
        """Chunks from ``sent`` on will never come: the map fails with ``exc`` once the
        chunks sent have reported."""
        with self._lock:
            if self._claimed:
                return
            unsent = max(0, self._chunks - sent)
            self._chunks_left -= unsent
            self.progress._advance(max(0, self._length - sent * self._chunksize))
            self._keep_first_error(exc)
            if self._chunks_left:
                return
            self._claimed = True
        self._finish()

    def _keep_first_error(self, exc: BaseException) -> None:
        # Only the first, but wait for every chunk, as multiprocessing does since
        # bpo-23992: returning early let workers run on behind the caller's back.
        if self._success:
            self._success, self._value = False, exc


class IMapIterator(Generic[T]):
    """Iterator returned by ``imap``: results in input order, each failure raised in place.

    ``next(timeout)`` raises ``multiprocessing.TimeoutError`` if no result is ready in time.
    A chunk that fails raises its exception once, in place of all its items; with
    ``chunksize > 1`` that ends the iteration, as multiprocessing's generator over the chunks
    ends (the rest of the input still runs, and its results are dropped). Results are
    kept a chunk at a time; ``on_consumed`` is called each time the caller finishes one, so
    that the engine can send more input (imap's buffer is bounded by what is not consumed).
    """

    remote_traceback: ClassVar[type[Exception]] = RemoteTraceback

    def __init__(self, job: int, on_done: OnDone,
                 on_consumed: Callable[[], None] | None = None, chunksize: int = 1,
                 display: ProgressDisplay | None = None,
                 stops_after_failure: bool | None = None) -> None:
        self._job = job
        self._on_done = on_done
        self._on_consumed = on_consumed
        self._chunksize = chunksize
        # Whether a failed chunk ends the iteration: multiprocessing's does when chunks hold
        # more than one item (a resumed run's iterator gets items one by one, see .resume).
        self._stops_after_failure = (chunksize > 1 if stops_after_failure is None
                                     else stops_after_failure)
        #: Items received out of how many (known once the input is exhausted).
        self.progress = Progress(None, display)
        self.quiet = display is None
        self._cond = threading.Condition(threading.Lock())
        # Chunks ready for the caller: (True, results) or (False, exception).
        self._chunks: collections.deque[tuple[bool, Any]] = collections.deque()
        self._position = 0  # of the next item in the first chunk
        self._chunks_seen = 0
        self.chunks_consumed = 0
        self._length: int | None = None
        self._unsorted: dict[int, tuple[bool, Any]] = {}
        self._claimed = False  # by the delivery that completes the job, or by abort
        self._stopped = False  # a failed chunk ended the iteration

    def __iter__(self) -> Iterator[T]:
        return self

    def next(self, timeout: float | None = None) -> T:
        with self._cond:
            if self._stopped:
                raise StopIteration
            if not self._chunks and not self._exhausted():
                platform.waited(
                    lambda seconds: self._cond.wait_for(
                        lambda: bool(self._chunks) or self._exhausted(), seconds),
                    timeout)
            if not self._chunks:
                if self._exhausted():
                    raise StopIteration
                raise TimeoutError
            success, value = self._chunks[0]
            if success:
                item = value[self._position]
                self._position += 1
                finished = self._position == len(value)
            else:
                finished = True
                self._stopped = self._stops_after_failure
            if finished:
                self._chunks.popleft()
                self._position = 0
                self.chunks_consumed += 1
            if self._stopped:  # what is in, and what comes, is dropped as consumed
                self.chunks_consumed += len(self._chunks)
                self._chunks.clear()
        if finished and self._on_consumed is not None:
            self._on_consumed()
        if success:
            return item  # type: ignore[no-any-return]
        raise value

    __next__ = next

    def _exhausted(self) -> bool:
        return self._chunks_seen == self._length

    def set_outcome(self, index: int, success: bool, value: Any) -> None:
        with self._cond:
            if self._claimed:  # complete, or terminated: later deliveries are dropped
                return
            if index == self._chunks_seen:
                self._append(success, value)
                while self._chunks_seen in self._unsorted:
                    self._append(*self._unsorted.pop(self._chunks_seen))
                self._cond.notify()
            else:
                self._unsorted[index] = (success, value)
            done = self._received(success, value)
            stopped = self._stopped
        if stopped and self._on_consumed is not None:
            self._on_consumed()
        if done:
            self._finish()

    def _received(self, success: bool, value: Any) -> bool:
        """Count a chunk in (under the lock); whether this delivery finishes the job."""
        self.progress._advance(len(value) if success else self._chunksize)
        return self._claim()

    def _claim(self) -> bool:
        if self._claimed or not self._exhausted():
            return False
        self._claimed = True
        return True

    def _finish(self) -> None:
        self.progress._close()
        self._on_done(self._job)

    def _append(self, success: bool, value: Any) -> None:
        if self._stopped or (success and not value):  # nobody will consume it
            self.chunks_consumed += 1
        else:
            self._chunks.append((success, value))
        self._chunks_seen += 1

    def abort(self, exc: BaseException) -> None:
        """Raise ``exc`` after the results already in, then stop (the pool was terminated)."""
        with self._cond:
            if self._claimed:
                return
            self._claimed = True
            self._unsorted.clear()
            self._chunks.append((False, exc))
            self._length = self._chunks_seen
            self._cond.notify()
        self._finish()

    def input_failed(self, sent: int, exc: BaseException) -> None:
        """Reading the input raised ``exc`` after ``sent`` chunks: it is raised in place of
        chunk ``sent``, the last, as in multiprocessing."""
        with self._cond:
            if self._claimed or self._length is not None:
                return
            self._length = sent + 1
        self.set_outcome(sent, False, exc)

    def input_ended(self, length: int, items: int) -> None:
        """The input is exhausted: ``length`` chunks holding ``items`` items in all."""
        with self._cond:
            if self._claimed:
                return
            self.progress._set_total(items)
            self._length = length
            done = self._claim()
            if done:
                self._cond.notify()
        if done:
            self._finish()


class IMapUnorderedIterator(IMapIterator[T]):
    """Iterator returned by ``imap_unordered``: each chunk's results as soon as it arrives."""

    def set_outcome(self, index: int, success: bool, value: Any) -> None:
        with self._cond:
            if self._claimed:
                return
            self._append(success, value)
            self._cond.notify()
            done = self._received(success, value)
            stopped = self._stopped
        if stopped and self._on_consumed is not None:
            self._on_consumed()
        if done:
            self._finish()
