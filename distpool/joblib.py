"""A joblib backend: ``n_jobs`` of scikit-learn and of any ``joblib.Parallel``, on a cluster.

    import distpool.joblib   # registers the backend "distpool"

    with joblib.parallel_config(backend="distpool"):
        GridSearchCV(model, grid, n_jobs=-1).fit(X, y)   # n_jobs=-1: every slot of the cluster

The backend is joblib's multiprocessing backend with a :class:`distpool.Pool` in place of
joblib's local pool, as Ray's is: the same bases, so joblib's auto-batching sizes the batches
(:class:`AutoBatchingMixin`), each batch is one ``apply_async`` task, and a task's error comes
back through joblib's own wrapper, raised as joblib raises it, the user's exception with the
remote traceback as its cause (:class:`PoolManagerMixin`). It does not subclass
``MultiprocessingBackend`` itself: that one builds a memory-mapping pool of local processes,
and refuses to run below threads, where it would fork; neither applies to a cluster.

Options: any keyword of :class:`distpool.Pool` but ``processes`` (``n_jobs`` decides it) and
``checkpoint`` (a Parallel call journals nothing), given to :func:`register`, to
``parallel_config(backend="distpool", ...)`` or to ``Parallel(..., backend="distpool")``,
later ones winning. With no broker configured, the backend starts one local cluster per queue
(``Pool()``'s: a Redis server and a worker per CPU) at its first call, and keeps it for the
process's later calls, since scikit-learn makes many; :func:`shutdown` stops it, and so does
the interpreter's exit. Each Parallel call gets a pool of its own on that cluster, of
``n_jobs`` processes: a pool costs milliseconds, a cluster a second.

Only this module of distpool imports joblib: ``import distpool`` does not.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
from typing import TYPE_CHECKING, Any, Callable

from . import config
from .errors import BrokerUnavailableError

try:
    import joblib
    from joblib._parallel_backends import (
        AutoBatchingMixin,
        FallbackToBackend,
        ParallelBackendBase,
        PoolManagerMixin,
        SequentialBackend,
    )
except ImportError as exc:  # said plainly: the module is optional, and so is joblib
    raise ImportError(
        "distpool.joblib needs joblib, on the client and on the workers: "
        "pip install joblib") from exc
if not hasattr(PoolManagerMixin, "submit"):  # joblib 1.5 named it so; before, apply_async
    raise ImportError(f"distpool.joblib needs joblib 1.5 or newer (this is {joblib.__version__})")

if TYPE_CHECKING:
    from .client.pool import Pool
    from .local.cluster import LocalCluster
    from .store.redis_store import RedisStore

#: The name :func:`register` gives the backend unless told otherwise.
NAME = "distpool"

#: What ``config.resolve`` takes: the options that choose the cluster and the pool's settings.
SETTINGS_OPTIONS = frozenset({"broker", "result_url", "queue", "eager", "pool_ttl",
                              "task_timeout", "secret", "insecure", "ship", "strict_versions"})
#: The backend's options: every keyword of ``distpool.Pool`` but ``processes`` and
#: ``checkpoint`` (and ``context``, which a pool ignores and joblib passes for its own pools).
POOL_OPTIONS = SETTINGS_OPTIONS | {"initializer", "initargs", "maxtasksperchild"}
#: What joblib passes to every backend's ``configure`` for its local pools (memory-mapping of
#: large arrays, a start method): nothing a pool on a cluster can use.
JOBLIB_OPTIONS = frozenset({"max_nbytes", "temp_folder", "mmap_mode", "verbose", "context"})


class DistpoolBackend(PoolManagerMixin, AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's backend for a distpool cluster; ``options``: keywords of ``distpool.Pool``
    (see the module's docstring)."""

    # Results and errors arrive through the pool's callbacks, on its delivery thread, which
    # dispatches the next batch, as multiprocessing's result handler does for joblib. (With
    # it, joblib allows return_as="generator" and Parallel's timeout too.)
    supports_retrieve_callback = True

    def __init__(self, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **options: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self._options = pool_options(options)
        # Resolved now, so that parallel_config fails at once on a setting it cannot use;
        # a call's own options (Parallel's keywords) hold from configure to terminate.
        self._settings = self._defaults = resolve(self._options)
        self._pool: Pool | None = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs``, with -1 the cluster's slots (-2 all but one, ...), as joblib's own
        backends count the CPUs."""
        return effective_n_jobs(n_jobs, self._settings)

    def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **options: Any) -> int:
        """Start this Parallel call's pool, of ``n_jobs`` processes on the cluster;
        ``options``: ``Parallel``'s own backend keywords, over the backend's."""
        merged = {**self._options,
                  **pool_options({key: value for key, value in options.items()
                                  if key not in JOBLIB_OPTIONS})}
        settings = resolve(merged)
        n_jobs = effective_n_jobs(n_jobs, settings)
        if n_jobs == 1:  # as joblib's process backends: run here, without a pool
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self._pool = new_pool(n_jobs, merged, settings)
        self._settings = settings
        self.parallel = parallel
        return n_jobs

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None
               ) -> Any:
        """Send one batch: joblib's way (its traceback-capturing wrapper, the callback for
        results and errors alike), except that a batch that cannot be sent fails through the
        callback too. joblib dispatches from the pool's delivery thread once results come
        back, where an exception would reach no one and the call would wait for ever."""
        try:
            return super().submit(func, callback)
        except Exception as exc:
            if callback is None:
                raise
            callback(exc)  # joblib raises it in the caller, and aborts the call
            return None

    def terminate(self) -> None:
        """End this call's pool (its tasks are all done, unless the call is aborted: then
        they are cancelled on the workers). The cluster stays, for the next call."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()
            pool.join()
        self._settings = self._defaults
        self.reset_batch_stats()


def pool_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options``, checked: keywords of ``distpool.Pool`` that the backend passes on."""
    unknown = sorted(set(options) - POOL_OPTIONS)
    if unknown:
        why = {"processes": ": n_jobs sets a pool's processes",
               "checkpoint": ": a Parallel call is not journaled"}
        raise TypeError(
            f"the distpool joblib backend takes no option {', '.join(map(repr, unknown))}"
            f"{why.get(unknown[0], '')}; it takes the keywords of distpool.Pool: "
            f"{', '.join(sorted(POOL_OPTIONS))}")
    return dict(options)


def resolve(options: dict[str, Any]) -> config.Settings:
    """The settings the backend's ``options`` call for (arguments, then ``DISTPOOL_*``)."""
    return config.resolve(**{key: value for key, value in options.items()
                             if key in SETTINGS_OPTIONS})


def register(name: str = NAME, *, make_default: bool = False, **options: Any) -> None:
    """Register the backend with joblib as ``name`` (``"distpool"``; importing this module
    does that already), with ``options`` (keywords of ``distpool.Pool``) as its defaults;
    ``make_default``: joblib's default backend from now on."""
    pool_options(options)  # checked now rather than at the first call
    factory = functools.partial(DistpoolBackend, **options) if options else DistpoolBackend
    joblib.register_parallel_backend(name, factory, make_default=make_default)


# -- the clusters the backend uses, shared by the process's calls ------------------------

_lock = threading.Lock()
#: The local clusters this module started (nothing configured), by queue.
_local_clusters: dict[str, LocalCluster] = {}
#: Connections to result stores, by URL, that count the slots of running clusters.
_stores: dict[str, RedisStore] = {}


def effective_n_jobs(n_jobs: int | None, settings: config.Settings) -> int:
    """``n_jobs`` on the cluster that ``settings`` choose: -1 is its slots, -2 all but one,
    ..., as joblib's own backends count CPUs; None is 1, as for them."""
    if n_jobs == 0:
        raise ValueError("n_jobs == 0 in Parallel has no meaning")
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(cluster_slots(settings) + 1 + n_jobs, 1)
    return n_jobs


def cluster_slots(settings: config.Settings) -> int:
    """The slots of the cluster that ``settings`` choose: ``n_jobs=-1``. Where none are
    registered (no worker has started yet), the CPU count, as ``Pool()`` takes then."""
    cpus = os.cpu_count() or 1
    if settings.eager:  # the tasks run here
        return cpus
    if settings.broker_url is None:  # the local cluster: a worker per CPU, started or not
        cluster = _local_clusters.get(settings.queue)
        return cpus if cluster is None else cluster.workers
    assert settings.result_url is not None  # resolve() sets it with the broker, or fails
    try:
        return _store(settings.result_url).worker_slots(settings.queue) or cpus
    except Exception as exc:
        raise BrokerUnavailableError(
            f"cannot count the slots of the cluster at {config.mask_url(settings.result_url)}"
            f": {exc}") from exc


def new_pool(processes: int, options: dict[str, Any], settings: config.Settings) -> Pool:
    """A pool of ``processes`` on the cluster that ``settings`` choose: the local cluster
    when none is configured."""
    from .client.pool import Pool

    options = {**options, "checkpoint": False}
    if not settings.eager and settings.broker_url is None:
        if settings.result_url is not None:  # as Pool() refuses it: see its _connect
            raise ValueError(
                "a result store was given (result_url or DISTPOOL_RESULT_URL) without a "
                "broker: the local cluster keeps results in its own Redis. Give the broker "
                "too (broker=..., DISTPOOL_BROKER_URL), or no result store")
        cluster = _local_cluster(settings.queue)
        # Its workers run from this process's files, as those of a Pool()'s own cluster:
        # nothing to ship.
        options.update(broker=cluster.broker_url, secret=cluster.secret, ship=False)
    return Pool(processes, **options)


def shutdown() -> None:
    """Stop the local clusters the backend started, and close its connections; the next
    call starts a cluster again. Interpreter exit does this too."""
    with _lock:
        clusters = list(_local_clusters.values())
        stores = list(_stores.values())
        _local_clusters.clear()
        _stores.clear()
    for cluster in clusters:
        cluster.stop()
    for store in stores:
        store.close()


def _local_cluster(queue: str) -> LocalCluster:
    """The local cluster for ``queue``, started at the first call; started again if it
    stopped on its own (its supervisor gave up)."""
    from .local.cluster import LocalCluster

    with _lock:  # held while one starts: two threads' first calls start one cluster
        cluster = _local_clusters.get(queue)
        if cluster is not None and cluster.failure() is None:
            return cluster
        if cluster is not None:
            cluster.stop()
        cluster = LocalCluster(queue=queue).start()
        _local_clusters[queue] = cluster
        return cluster


def _store(url: str) -> RedisStore:
    from .store.redis_store import RedisStore
    from .transports import REPLY_TIMEOUT

    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = RedisStore(url, REPLY_TIMEOUT)
        return store


atexit.register(shutdown)
register()

__all__ = ["NAME", "DistpoolBackend", "register", "shutdown"]
