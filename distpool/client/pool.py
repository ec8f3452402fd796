"""``distpool.Pool``: the ``multiprocessing.Pool`` API over a cluster of Celery workers.

The pool validates its arguments, serialises the callable once per call, at the call (so a
callable that cannot travel fails there, naming it, with nothing sent), and hands tasks to
its :class:`~distpool.client.engine.Engine`. Chunks of the input are serialised as the engine
sends them, as multiprocessing's task handler does: the client holds the serialised data of
the tasks in flight, not of the whole input, and an item that cannot travel fails the map
(naming the item) once the chunks sent before it have reported. Chunking,
ordering, callbacks and errors follow ``Lib/multiprocessing/pool.py``. :class:`Calls` is
what :class:`~distpool.client.executor.Executor` builds on.
"""

from __future__ import annotations

import os
import uuid
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence, Sized
from multiprocessing.pool import CLOSE, RUN, TERMINATE
from typing import Any, Callable, Literal, TypeVar

from .. import config, transports
from ..local.cluster import LocalCluster
from .adoption import RunHooks
from .engine import Engine
from .progress import TqdmDisplay
from .remaining import Remaining, resume_items
from .results import (
    ApplyResult,
    Callback,
    IMapIterator,
    IMapUnorderedIterator,
    JobResult,
    MapResult,
)
from .resume import NamedRun, journal_root, run_name
from .shipping import Serialised, Serialiser, Shipping
from .sources import ReadAhead, gated, lazy_tasks, map_tasks
from .tasks import Function, TaskMaker

T = TypeVar("T")
R = TypeVar("R")


class Pool:
    """A process pool whose processes are Celery workers, possibly on other machines.

    ``Pool(processes, initializer, initargs, maxtasksperchild, context)`` are those of
    ``multiprocessing.Pool`` (``context`` is accepted and ignored). ``processes`` bounds how
    many of this pool's tasks are in flight at once; by default, the number of worker
    processes serving the queue. The keyword-only arguments choose the cluster: ``broker``
    (URL), ``result_url`` (the Redis that carries results back), ``queue``, ``eager`` (run
    tasks in this process, for tests), ``pool_ttl`` (seconds after which workers drop the
    tasks of a pool whose client stopped refreshing it), ``task_timeout`` (seconds a task
    may run before it fails and its process is replaced), ``secret`` (the key shared with
    the workers, which signs every task and result), ``insecure`` (run without a key),
    ``ship`` (which of the user's own modules travel to the workers: ``"auto"``, False, or
    a list of modules and paths; see :mod:`distpool.client.shipping`) and
    ``strict_versions`` (refuse to run a task on a worker whose installed modules it relies
    on are of other versions than here, instead of warning), ``checkpoint`` (a run name:
    the pool journals its results, and the same script run again with that name resumes
    where it stopped; see :mod:`distpool.client.resume`), with ``resume_window`` (seconds the
    workers go on with its work once its client died; see :mod:`distpool.client.adoption`).
    Unset, each comes from its
    ``DISTPOOL_*`` environment variable, then from the defaults (see README). With no broker
    at all, the pool starts a private local cluster.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        broker: str | None = None,
        result_url: str | None = None,
        queue: str | None = None,
        eager: bool | None = None,
        pool_ttl: float | None = None,
        task_timeout: float | None = None,
        secret: str | bytes | None = None,
        insecure: bool | None = None,
        ship: str | bool | Iterable[str | os.PathLike[str]] | None = None,
        strict_versions: bool | None = None,
        checkpoint: str | Literal[False] | None = None,
        resume_window: float | None = None,
    ) -> None:
        # Set first, so that __del__ and __repr__ work on a half-built pool.
        self._state = "INIT"
        self._engine: Engine | None = None
        self._run: NamedRun | None = None
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        settings = config.resolve(broker=broker, result_url=result_url, queue=queue,
                                  eager=eager, pool_ttl=pool_ttl, task_timeout=task_timeout,
                                  secret=secret, insecure=insecure, ship=ship,
                                  strict_versions=strict_versions,
                                  resume_window=resume_window)
        # Nothing to ship, nor versions to compare, where the workers are this process (eager)
        # or run from its files and environment (a private local cluster); a ship entry that
        # names nothing fails here all the same.
        shipping = Shipping(settings.ship)
        self._serialiser = Serialiser(None if settings.eager or settings.broker_url is None
                                      else shipping)
        self._serialise = self._serialiser.serialise
        initializer_payload = None if initializer is None else self._serialise(
            (initializer, tuple(initargs)), "the initializer and its initargs")
        self._cluster: LocalCluster | None = None
        name = None if checkpoint is False else run_name(checkpoint)
        if name is not None:  # first: a run another process holds starts nothing here
            self._run = NamedRun.open(name, journal_root())
        try:
            self._connect(settings, processes, initializer_payload, maxtasksperchild)
        except BaseException:
            if self._run is not None:
                self._run.close()
            raise
        self._state = RUN
        assert self._engine is not None
        # Threads and results refer to the engine, never to the pool, so an abandoned pool
        # is collected, and then (or at interpreter exit) its engine is terminated.
        self._finalizer: weakref.finalize[Any, None] = weakref.finalize(
            self, _shut_down, self._engine, self._cluster, self._run)

    @property
    def resumed(self) -> int:
        """How many results this pool took from its run's journal instead of computing them
        (0 for a pool without a run name)."""
        return 0 if self._run is None else self._run.resumed

    def _connect(self, settings: config.Settings, processes: int | None,
                 initializer_payload: Serialised | None,
                 maxtasksperchild: int | None) -> None:
        """Start the private cluster if none is configured, and the engine."""
        if settings.broker_url is None and not settings.eager:
            if settings.result_url is not None:
                # Its workers would keep results, and look for this pool's liveness key, in
                # the private cluster's Redis: every task skipped, the map waiting for ever.
                raise ValueError(
                    "a result store was given (result_url or DISTPOOL_RESULT_URL) without a "
                    "broker: a private local cluster keeps results in its own Redis. Give "
                    "the broker too (broker=..., DISTPOOL_BROKER_URL), or no result store")
            # No cluster configured: a private one, with a worker process per pool process.
            self._cluster = LocalCluster(processes, settings.queue).start()
            settings = settings.with_broker(self._cluster.broker_url,
                                            self._cluster.secret.encode())
        self._settings = settings
        # Masked now: __del__ may repr a pool left for interpreter exit, when the modules
        # that would mask it are gone.
        self._shown_broker = (None if settings.broker_url is None
                              else config.mask_url(settings.broker_url))
        try:
            transport = transports.connect(settings)
            try:
                self._processes = (processes or transport.store.worker_slots(settings.queue)
                                   or os.cpu_count() or 1)
                self._pool_id = uuid.uuid4().hex
                hooks, earlier = None, None
                if self._run is not None and not settings.eager and self._cluster is None:
                    self._run.hold_in(transports.run_holds(settings))  # (other hosts')
                    earlier = self._run.take_over(transport.store, transport.signer)
                    self._pool_id = self._pool_id if earlier is None else earlier[0]
                    self._run.started(self._pool_id)
                    hooks = RunHooks(self._run.next_job, self._run.sent)
                self._tasks = TaskMaker(self._pool_id, initializer_payload, maxtasksperchild,
                                        settings.strict_versions)
                self._engine = Engine(
                    transport, settings, self._pool_id, self._processes,
                    transport_gone=self._cluster.failure if self._cluster else lambda: None,
                    run=hooks)
                if earlier is not None and self._run is not None:
                    _, messages, jobs = earlier
                    self._engine.adopt(messages,
                                       self._run.adopted_jobs(jobs, self._engine.job_done))
            except BaseException:
                transport.publisher.close()
                transport.store.close()
                raise
        except BaseException:
            if self._cluster is not None:
                self._cluster.stop()
            raise

    # -- the multiprocessing.Pool API ------------------------------------------------------

    def apply(self, func: Callable[..., T], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] = {}) -> T:
        # Sent from this thread when a slot is free: it waits for the result anyway.
        return self._apply(Function(func), args, kwds, None, None, waits=True).get()

    def apply_async(self, func: Callable[..., T], args: Iterable[Any] = (),
                    kwds: Mapping[str, Any] = {}, callback: Callback = None,
                    error_callback: Callback = None) -> ApplyResult[T]:
        return self._apply(Function(func), args, kwds, callback, error_callback)

    def map(self, func: Callable[[Any], T], iterable: Iterable[Any],
            chunksize: int | None = None, *, progress: bool = False) -> list[T]:
        """Like ``multiprocessing.Pool.map``; ``progress=True`` shows a bar counting items."""
        return self._map_async(func, iterable, "map", chunksize, progress=progress,
                               waits=True).get()

    def map_async(self, func: Callable[[Any], T], iterable: Iterable[Any],
                  chunksize: int | None = None, callback: Callback = None,
                  error_callback: Callback = None) -> MapResult[T]:
        return self._map_async(func, iterable, "map", chunksize, callback, error_callback)

    def starmap(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None, *, progress: bool = False) -> list[T]:
        """Like ``multiprocessing.Pool.starmap``; ``progress`` as in :meth:`map`."""
        return self._map_async(func, iterable, "starmap", chunksize, progress=progress,
                               waits=True).get()

    def starmap_async(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None, callback: Callback = None,
                      error_callback: Callback = None) -> MapResult[T]:
        return self._map_async(func, iterable, "starmap", chunksize, callback, error_callback)

    def imap(self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int = 1,
             buffersize: int | None = None, *, progress: bool = False) -> IMapIterator[T]:
        """Like ``multiprocessing.Pool.imap``; at most ``buffersize`` chunks are sent ahead
        of what the caller has consumed (default: 4 per process, at least 16), as with
        Python 3.15's ``buffersize``, so a huge input floods neither broker nor memory.
        ``progress=True`` shows a bar counting the items received."""
        return self._imap(IMapIterator, func, iterable, chunksize, buffersize, progress)

    def imap_unordered(self, func: Callable[[Any], T], iterable: Iterable[Any],
                       chunksize: int = 1, buffersize: int | None = None, *,
                       progress: bool = False) -> IMapIterator[T]:
        """Like ``multiprocessing.Pool.imap_unordered``; the rest as in :meth:`imap`."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, buffersize,
                          progress)

    def close(self) -> None:
        """Accept no more work; the workers finish what was submitted."""
        if self._state == RUN:
            self._state = CLOSE
            assert self._engine is not None
            self._engine.close()

    def terminate(self) -> None:
        """Stop now: see :meth:`distpool.engine.Engine.terminate`."""
        self._state = TERMINATE
        self._finalizer()

    def join(self) -> None:
        """Wait for the pool's work to finish, after :meth:`close` or :meth:`terminate`."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        assert self._engine is not None
        self._engine.join()
        if self._cluster is not None:
            self._cluster.stop()
        if self._run is not None and self._state == CLOSE:  # its work all done
            self._run.finish()

    def __enter__(self) -> Pool:
        self._running_engine()
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        if self._run is not None and exc_type is None:  # the script's run went through
            self._run.finish()
        self.terminate()

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        cls = type(self)
        broker = getattr(self, "_shown_broker", None)
        return (f"<{cls.__module__}.{cls.__qualname__} state={self._state} "
                f"pool_size={getattr(self, '_processes', None)} broker={broker}>")

    def __del__(self, _warn: Callable[..., None] = warnings.warn, RUN: str = RUN) -> None:
        if self._state == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning,
                  source=self)

    # -- helpers ------------------------------------------------------------------------

    def _running_engine(self) -> Engine:
        if self._state != RUN or self._engine is None:
            raise ValueError("Pool not running")
        return self._engine

    def _apply(self, function: Function[T], args: Iterable[Any], kwds: Mapping[str, Any],
               callback: Callback, error_callback: Callback,
               start: Callable[[], bool] | None = None,
               result_type: type[ApplyResult[Any]] = ApplyResult,
               waits: bool = False) -> ApplyResult[T]:
        """``apply_async``, and :meth:`Calls.submit` when ``start`` is given; ``waits``: the
        caller will wait for the result (``apply``), so it may send the task itself."""
        engine = self._running_engine()
        code = function.serialised(self._serialise)
        args, kwds = tuple(args), dict(kwds)
        arguments = self._serialise((args, kwds), "the arguments")
        job = engine.new_job()
        result: ApplyResult[T] = result_type(job, engine.job_done, callback, error_callback)
        job_result: JobResult = result
        if self._run is not None and start is None:  # (the Executor's calls journal nothing)
            call = self._run.call("apply", function.label, code.payload)
            argument_digest = call.take(0, (args, kwds), result, single=True)
            if argument_digest is None:  # from the journal, or from an earlier client's task
                return result
            job_result = Remaining(result, call, job, [0], [argument_digest], single=True)
        task = self._tasks.task(job, 0, "apply", code, arguments, function.label)
        engine.submit(job, job_result, iter([task]) if start is None else gated(task, result,
                                                                                start),
                      here=waits)
        return result

    def _map_async(self, func: Callable[..., Any], iterable: Iterable[Any], kind: str,
                   chunksize: int | None, callback: Callback = None,
                   error_callback: Callback = None, progress: bool = False,
                   waits: bool = False) -> MapResult[Any]:
        engine = self._running_engine()
        items: Sequence[Any] = iterable if hasattr(iterable, "__len__") else list(iterable)  # type: ignore[assignment]
        length = len(items)
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        function = Function(func)
        code = function.serialised(self._serialise)  # raises here, naming it, if it cannot travel
        job = engine.new_job()
        call = None if self._run is None else self._run.call(kind, function.label,
                                                             code.payload)
        display = TqdmDisplay(length, func) if progress else None
        if call is None:
            chunksize = chunksize or self._default_chunksize(length)
            result: MapResult[Any] = MapResult(job, engine.job_done, length, chunksize,
                                               callback, error_callback, display)
            job_result: JobResult = result
        else:  # item by item: those the journal holds complete at once
            result = MapResult(job, engine.job_done, length, 1, callback, error_callback,
                               display)
            positions, digests, items = resume_items(call, result, items)
            chunksize = chunksize or self._default_chunksize(len(items))
            job_result = Remaining(result, call, job, positions, digests, chunksize)
        if result.ready() or not items:  # nothing (left) to send
            return result
        engine.submit(job, job_result, map_tasks(self._tasks, self._serialiser, job, kind,
                                                 code, function.label, items, chunksize),
                      here=waits)
        return result

    def _default_chunksize(self, length: int) -> int:
        """multiprocessing's: four chunks per process."""
        chunksize, extra = divmod(length, self._processes * 4)
        return chunksize + 1 if extra else chunksize

    def _imap(self, result_type: type, func: Callable[..., Any], iterable: Iterable[Any],
              chunksize: int, buffersize: int | None, progress: bool) -> IMapIterator[Any]:
        engine = self._running_engine()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        if buffersize is not None and buffersize < 1:
            raise ValueError(f"buffersize must be None or > 0, not {buffersize}")
        function = Function(func)
        code = function.serialised(self._serialise)
        items = iter(iterable)
        job = engine.new_job()
        length = len(iterable) if isinstance(iterable, Sized) else None
        display = TqdmDisplay(length, func) if progress else None
        if self._run is None:
            result: IMapIterator[Any] = result_type(
                job, engine.job_done, engine.wake_dispatcher, chunksize, display)
            job_result: Any = result
        else:  # item by item: those the journal holds come at once
            kind = "imap" if result_type is IMapIterator else "imap_unordered"
            call = self._run.call(kind, function.label, code.payload)
            result = result_type(job, engine.job_done, engine.wake_dispatcher, 1, display,
                                 stops_after_failure=chunksize > 1)
            job_result = Remaining(result, call, job, [], [], chunksize)
            items = job_result.read_lazily(items)
        engine.submit(job, job_result, lazy_tasks(self._tasks, self._serialiser, job,
                                                  job_result, function.label, code, items,
                                                  chunksize),
                      ReadAhead(buffersize or max(16, 4 * self._processes), result))
        return result


DistributedPool = Pool


class Calls:
    """The pool's API for :class:`~distpool.client.executor.Executor`, beyond
    ``apply_async``: one callable serialised once for many calls (``Executor.map``), and a
    call withdrawn until the moment it is sent (``Future.cancel``)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def submit(self, function: Function[T], args: Iterable[Any], kwds: Mapping[str, Any],
               callback: Callback, error_callback: Callback,
               start: Callable[[], bool], result_type: type[ApplyResult[Any]]) -> ApplyResult[T]:
        """``apply_async(function, args, kwds, callback, error_callback)`` whose result is a
        ``result_type``, except that ``start`` is asked just before the task is sent: if it
        returns False, the task is dropped and its result fails with ``CancelledError``."""
        return self._pool._apply(function, args, kwds, callback, error_callback, start,
                                 result_type)


def _shut_down(engine: Engine, cluster: LocalCluster | None, run: NamedRun | None) -> None:
    engine.terminate()
    if cluster is not None:
        cluster.stop()
    if run is not None:
        run.close()
