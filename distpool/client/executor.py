"""``distpool.Executor``: a ``concurrent.futures.Executor`` on a distpool Pool.

Like ``ProcessPoolExecutor``, a future is marked running when its task is handed to the
cluster, which happens only as slots free up (the pool keeps at most ``max_workers`` tasks in
flight). Until then ``Future.cancel()`` succeeds, and a cancelled task is never sent. It is
built on the pool's :class:`~distpool.client.pool.Calls`.

``shutdown(cancel_futures=True)`` lets the free slots take their tasks before it cancels the
rest, as ``ProcessPoolExecutor``'s manager thread fills its call queue before it cancels: a
burst of submissions followed at once by that shutdown still runs some of its tasks.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .pool import Calls, Pool
from .results import ApplyResult
from .sources import chunked
from .tasks import Function

T = TypeVar("T")

#: Longest ``shutdown(cancel_futures=True)`` waits for the free slots to take their tasks.
START_WAIT = 5.0


class FutureResult(ApplyResult[T]):
    """The result of an Executor's task, which only resolves its future (through its
    callbacks): a failure's cause is ProcessPoolExecutor's."""

    remote_traceback = concurrent.futures.process._RemoteTraceback

    def _finish(self) -> None:
        # As in ProcessPoolExecutor (bpo-14406), nothing keeps a result once the future has
        # it: not this object, and resolving the future comes last, after the bookkeeping
        # (which may wait for a lock) rather than before it, while the caller may have it.
        hand_over = self._callback if self._success else self._error_callback
        value, self._value = self._value, None
        self._callback = self._error_callback = None
        self.progress._close()
        self._event.set()
        self._on_done(self._job)
        if hand_over is not None:
            hand_over(value)


class Executor(concurrent.futures.Executor):
    """``Executor(max_workers=None, initializer=None, initargs=(), **pool_options)``.

    ``max_workers`` is the pool's ``processes``; ``pool_options`` are :class:`distpool.Pool`'s
    keyword arguments (``broker``, ``queue``, ``secret``, ``task_timeout``, ...).
    """

    def __init__(self, max_workers: int | None = None,
                 initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
                 **pool_options: Any) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if "checkpoint" in pool_options:
            raise TypeError("an Executor has no named runs (checkpoint): a Pool has")
        # No run, whatever $DISTPOOL_CHECKPOINT says: futures are not matched to a journal.
        self._pool = Pool(max_workers, initializer, initargs, checkpoint=False, **pool_options)
        #: As ProcessPoolExecutor's: how many tasks run at once (dask sizes its work by it).
        self._max_workers: int = self._pool._processes
        self._calls = Calls(self._pool)
        self._changed = threading.Condition(threading.Lock())
        self._pending: set[concurrent.futures.Future[Any]] = set()  # not done
        self._running: set[concurrent.futures.Future[Any]] = set()  # sent, not done
        self._shutdown = False

    def submit(self, fn: Callable[..., T], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._changed:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.add(future)
        future.add_done_callback(self._forget)

        def resolve(value: T) -> None:
            if not future.cancelled():
                future.set_result(value)

        def reject(exc: BaseException) -> None:
            if not future.cancelled():
                future.set_exception(exc)

        def start() -> bool:
            with self._changed:  # as one with _forget, which a terminate may run at once
                if not future.set_running_or_notify_cancel():
                    return False
                self._running.add(future)
                self._changed.notify_all()
            return True

        try:
            # From map() comes a Function: serialised once for all its items.
            function = fn if isinstance(fn, Function) else Function(fn)
            self._calls.submit(function, args, kwargs, resolve, reject, start, FutureResult)
        except BaseException:
            self._forget(future)
            raise
        return future

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[T]:
        """Like ``ProcessPoolExecutor.map``: items go ``chunksize`` to a task."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(Function(fn), *iterables, timeout=timeout)
        chunks = chunked(zip(*iterables), chunksize)
        results: Iterator[list[T]] = super().map(
            Function(functools.partial(_run_chunk, fn)), chunks, timeout=timeout)
        return _items_of_chunks(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pending: list[concurrent.futures.Future[Any]] = []
        with self._changed:
            self._shutdown = True
            if cancel_futures:
                # First the free slots take their tasks (see the module's docstring), if the
                # dispatcher can send them at all: a broker that is away does not hold this.
                self._changed.wait_for(self._slots_taken, timeout=START_WAIT)
                pending = list(self._pending)
        for future in pending:
            future.cancel()
        self._pool.close()
        if wait:
            self._pool.join()

    def _slots_taken(self) -> bool:
        """Whether the dispatcher can start no more futures now (called under the lock)."""
        return (len(self._running) >= self._max_workers
                or len(self._running) == len(self._pending))

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._changed:
            self._pending.discard(future)
            self._running.discard(future)
            self._changed.notify_all()


def _run_chunk(fn: Callable[..., T], chunk: tuple[tuple[Any, ...], ...]) -> list[T]:
    return [fn(*args) for args in chunk]


def _items_of_chunks(chunks: Iterator[list[T]]) -> Iterator[T]:
    """The items of each chunk in turn, each taken out of its chunk as it is handed over:
    the iterator keeps no reference to a result the caller has (as ProcessPoolExecutor's,
    bpo-14406), where ``itertools.chain`` would keep the chunk's until its end."""
    for chunk in chunks:
        chunk.reverse()
        while chunk:
            yield chunk.pop()
