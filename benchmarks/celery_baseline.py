"""Hand-written Celery + Redis, the way distpool's first users ran their workloads before it:
a comparison column for the benchmarks.

The app follows the advice those users had to find for long tasks: JSON messages, one task
reserved per process (prefetch multiplier 1) and late acknowledgement, results stored in
Redis. Its worker (``celery worker -c 2``, prefork, started with the same flags as
``distpool worker``) runs the workloads' own functions, registered here as tasks by name.

:class:`CeleryPool` offers the few ``Pool`` methods the workloads call, each written as a
Celery user would: ``delay().get()``, and ``map`` as one task per chunk, chunked as
``multiprocessing.Pool.map`` chunks by default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery

from benchmarks import workloads

QUEUE = "benchmarks-celery"
#: The task functions workers may run, by name: what a hand-written app registers.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    function.__name__: function
    for function in (workloads.noop, workloads.square, workloads.burn)
}
#: Longest wait for a fresh worker's first result.
START_TIMEOUT = 60.0


def create_app(broker_url: str) -> Celery:
    app = Celery("benchmarks-celery", broker=broker_url, backend=broker_url,
                 set_as_current=False)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_default_queue=QUEUE, worker_prefetch_multiplier=1, task_acks_late=True,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="benchmarks.call", shared=False)  # type: ignore[untyped-decorator]
    def call(name: str, args: list[Any]) -> Any:
        return FUNCTIONS[name](*args)

    @app.task(name="benchmarks.map_chunk", shared=False)  # type: ignore[untyped-decorator]
    def map_chunk(name: str, items: list[Any]) -> list[Any]:
        function = FUNCTIONS[name]
        return [function(item) for item in items]

    return app


#: The app a ``celery worker`` started by :func:`start_worker` loads (``-A``).
app = create_app(os.environ.get("BENCHMARKS_CELERY_BROKER", "redis://127.0.0.1:6379/0"))


class CeleryPool:
    """The ``Pool`` methods the workloads use, on a plain Celery app."""

    def __init__(self, broker_url: str, processes: int, queue: str = QUEUE) -> None:
        self._app = create_app(broker_url)
        self._processes = processes
        self._queue = queue
        self._call = self._app.tasks["benchmarks.call"]
        self._map_chunk = self._app.tasks["benchmarks.map_chunk"]

    def apply(self, function: Callable[..., Any], args: Iterable[Any] = ()) -> Any:
        return self.apply_async(function, args).get()

    def apply_async(self, function: Callable[..., Any], args: Iterable[Any] = ()) -> Any:
        return self._call.apply_async((function.__name__, list(args)), queue=self._queue)

    def map(self, function: Callable[..., Any], iterable: Iterable[Any],
            chunksize: int | None = None) -> list[Any]:
        items = list(iterable)
        if chunksize is None:  # multiprocessing.Pool.map's default
            chunksize, extra = divmod(len(items), self._processes * 4)
            chunksize += bool(extra)
        chunksize = max(1, chunksize)
        sent = [self._map_chunk.apply_async((function.__name__, items[i:i + chunksize]),
                                            queue=self._queue)
                for i in range(0, len(items), chunksize)]
        return [value for result in sent for value in result.get()]

    def __enter__(self) -> CeleryPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._app.close()


def start_worker(broker_url: str, processes: int, queue: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "benchmarks.celery_baseline", "worker",
         f"--queues={queue}", f"--concurrency={processes}", "--loglevel=WARNING",
         "--without-gossip", "--without-mingle", f"--hostname={queue}-{os.getpid()}@%h"],
        env={**os.environ, "BENCHMARKS_CELERY_BROKER": broker_url},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Celery's warm shutdown, then a kill if it takes too long."""
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


@contextmanager
def _worker(broker_url: str, processes: int, queue: str) -> Iterator[None]:
    worker = start_worker(broker_url, processes, queue)
    try:
        yield
    finally:
        stop_worker(worker)


@contextmanager
def running_worker(broker_url: str, processes: int) -> Iterator[None]:
    """A worker for the pools attached to it, ready once this is entered, stopped after."""
    with _worker(broker_url, processes, QUEUE):
        with CeleryPool(broker_url, processes) as pool:
            pool.apply_async(workloads.noop).get(timeout=START_TIMEOUT)
        yield


@contextmanager
def fresh_pool(broker_url: str, processes: int) -> Iterator[CeleryPool]:
    """A pool whose worker starts now, on a queue of its own: its "start to first result"
    includes the worker's start, as a hand-written deployment's first run does."""
    queue = f"{QUEUE}-fresh"
    with _worker(broker_url, processes, queue), CeleryPool(broker_url, processes, queue) as pool:
        yield pool
