"""The joblib backend on real workers: scikit-learn's GridSearchCV and joblib.Parallel run on
the cluster with the results of joblib's default backend (loky), ``n_jobs=-1`` takes every
slot, joblib's batches are what travel, errors come back as loky raises them, and with
nothing configured one local cluster serves every call of the process."""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest

joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")

from joblib import Parallel, delayed, parallel_config  # noqa: E402

import distpool.joblib  # noqa: E402
from tests.support import Cluster  # noqa: E402

pytestmark = pytest.mark.integration

MakeCluster = Callable[..., Cluster]


class Boom(Exception):
    """A user's own exception type."""


def fail_at(x: int, bad: int) -> int:
    if x == bad:
        raise Boom(f"no {x}")
    return x


def square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def rendezvous(directory: str, index: int, count: int, wait: float = 20.0) -> tuple[int, bool]:
    """Arrive, then wait for ``count`` tasks to have arrived: all of them only if they run at
    the same time. Returns this process's pid and whether all arrived."""
    Path(directory, str(index)).touch()
    deadline = time.monotonic() + wait
    while len(os.listdir(directory)) < count:
        if time.monotonic() > deadline:
            return os.getpid(), False
        time.sleep(0.01)
    return os.getpid(), True


def scored_in(directory: str, estimator: Any, X: Any, y: Any) -> float:
    """A scorer (accuracy) that records which process scored."""
    Path(directory, f"{os.getpid()}-{uuid.uuid4().hex}").touch()
    return float(estimator.score(X, y))


def pids_in(directory: Path) -> set[int]:
    return {int(path.name.split("-")[0]) for path in directory.iterdir()}


def tree_pids(pids: Iterable[int]) -> set[int]:
    """The processes ``pids`` and all their descendants."""
    found = set()
    for pid in pids:
        process = psutil.Process(pid)
        found |= {pid, *(child.pid for child in process.children(recursive=True))}
    return found


@pytest.fixture(scope="module", autouse=True)
def no_loky_left() -> Iterable[None]:
    """The loky workers that the comparisons start stop with this module, not 300 s later."""
    yield
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def test_grid_search_on_the_cluster_gives_what_the_default_backend_gives(
        shared_cluster: Cluster, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_digits(return_X_y=True)
    X, y = X[:600], y[:600]
    grid = {"C": [0.1, 1, 10], "gamma": ["scale", 1e-3, 1e-2]}
    searches = {}
    for backend, options in (("loky", {}), ("distpool", shared_cluster.pool_kwargs())):
        scored = tmp_path / backend
        scored.mkdir()
        with parallel_config(backend=backend, **options):
            searches[backend] = GridSearchCV(
                SVC(), grid, cv=3, n_jobs=2,
                scoring=functools.partial(scored_in, str(scored))).fit(X, y)
    default, ours = searches["loky"], searches["distpool"]
    assert ours.best_params_ == default.best_params_
    assert (ours.best_index_, ours.best_score_) == (default.best_index_, default.best_score_)
    compared = [key for key in default.cv_results_ if "time" not in key]
    assert "split2_test_score" in compared and "rank_test_score" in compared
    for key in compared:
        assert list(ours.cv_results_[key]) == list(default.cv_results_[key]), key
    # Every fit was scored on the cluster's workers: 9 candidates x 3 folds.
    assert len(list((tmp_path / "distpool").iterdir())) == 27
    workers = tree_pids(worker.process.pid for worker in shared_cluster.workers)
    assert pids_in(tmp_path / "distpool") <= workers - {os.getpid()}


def test_n_jobs_minus_one_runs_a_task_on_every_slot_of_the_cluster_at_once(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(nodes=2, concurrency=2)
    with parallel_config(backend="distpool", **cluster.pool_kwargs()):
        assert [joblib.effective_n_jobs(n) for n in (-1, -2, -4, -5)] == [4, 3, 1, 1]
        arrived = Parallel(n_jobs=-1)(
            delayed(rendezvous)(str(tmp_path), index, 4) for index in range(4))
    # With fewer than 4 in flight, the first ones would have waited in vain for the last.
    assert [all_arrived for _, all_arrived in arrived] == [True] * 4
    assert len({pid for pid, _ in arrived}) == 4


def test_tiny_tasks_travel_in_joblibs_batches(shared_cluster: Cluster,
                                               sent: list[Any]) -> None:
    with parallel_config(backend="distpool", **shared_cluster.pool_kwargs()):
        parallel = Parallel(n_jobs=2)
        results = parallel(delayed(square_and_pid)(x) for x in range(5000))
    assert [value for value, _ in results] == [x * x for x in range(5000)]
    assert os.getpid() not in {pid for _, pid in results}
    # joblib's auto-batching grew the batches of these microsecond tasks, and each batch it
    # made was one task of the pool.
    assert parallel.n_dispatched_tasks == 5000
    assert parallel.n_dispatched_batches == len(sent) < 500


def test_options_given_to_parallel_and_generators(shared_cluster: Cluster) -> None:
    results = Parallel(n_jobs=2, backend="distpool", return_as="generator_unordered",
                       **shared_cluster.pool_kwargs())(
        delayed(square_and_pid)(x) for x in range(20))
    values, pids = zip(*results)
    assert sorted(values) == [x * x for x in range(20)]
    assert os.getpid() not in pids


def test_errors_are_raised_as_the_default_backend_raises_them(shared_cluster: Cluster) -> None:
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    raised: dict[str, list[BaseException]] = {}
    for backend, options in (("loky", {}), ("distpool", shared_cluster.pool_kwargs())):
        raised[backend] = []
        with parallel_config(backend=backend, **options):
            with pytest.raises(Boom) as boom:
                Parallel(n_jobs=2)(delayed(fail_at)(x, 5) for x in range(40))
            raised[backend].append(boom.value)
            # scikit-learn's own error, raised by a fit (C must be positive).
            with pytest.raises(ValueError) as invalid:
                GridSearchCV(SVC(), {"C": [1.0, -1.0]}, cv=2, n_jobs=2,
                             error_score="raise").fit([[0], [1], [2], [3]], [0, 1, 0, 1])
            raised[backend].append(invalid.value)
            # The call that failed took its pool with it; the backend serves the next.
            assert Parallel(n_jobs=2)(delayed(fail_at)(x, -1) for x in range(4)) == [0, 1, 2, 3]
    for default, ours in zip(raised["loky"], raised["distpool"]):
        assert type(ours) is type(default) and ours.args == default.args
        assert type(ours.__cause__) is type(default.__cause__)  # the remote traceback
    assert "in fail_at" in str(raised["distpool"][0].__cause__)


def test_a_call_past_its_timeout_stops_its_tasks_on_the_workers(
        make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(nodes=1, concurrency=2)
    with parallel_config(backend="distpool", **cluster.pool_kwargs()):
        started = time.monotonic()
        with pytest.raises(multiprocessing.TimeoutError):  # joblib's, whatever the backend
            Parallel(n_jobs=2, timeout=1)(delayed(time.sleep)(300) for _ in range(2))
        # Both slots are free again, at once: the sleeps were stopped with the call's pool.
        arrived = Parallel(n_jobs=2)(delayed(rendezvous)(str(tmp_path), i, 2) for i in range(2))
        assert [all_arrived for _, all_arrived in arrived] == [True, True]
    assert time.monotonic() - started < 60


def test_with_nothing_configured_one_local_cluster_serves_every_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DISTPOOL_"):
            monkeypatch.delenv(name)
    assert distpool.joblib._local_clusters == {}
    try:
        pids = []
        for _ in range(2):  # two backends (parallel_config blocks), two calls each
            with parallel_config(backend="distpool"):
                for _ in range(2):
                    pids += [pid for _, pid in Parallel(n_jobs=2)(
                        delayed(square_and_pid)(x) for x in range(8))]
        [cluster] = distpool.joblib._local_clusters.values()
        assert cluster.workers == (os.cpu_count() or 1)
        supervisor = cluster._supervisor
        assert supervisor is not None
        assert set(pids) <= tree_pids([supervisor.pid]) - {os.getpid()}
    finally:
        distpool.joblib.shutdown()
    assert distpool.joblib._local_clusters == {}
    assert supervisor.poll() is not None  # stopped, with its Redis and workers
