"""distpool.joblib, the joblib backend, without a cluster: its registration, its options, how
it counts n_jobs, and whole Parallel calls in eager mode (the tasks run in this process,
through the same pool, serialisation and worker code). tests/integration/test_joblib_backend.py
runs it on real workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

joblib = pytest.importorskip("joblib")

from joblib import Parallel, delayed, parallel_config  # noqa: E402
from joblib.externals.loky.process_executor import _RemoteTraceback  # noqa: E402
from joblib.parallel import BACKENDS, get_active_backend  # noqa: E402

import distpool  # noqa: E402
import distpool.joblib  # noqa: E402
from distpool.joblib import DistpoolBackend  # noqa: E402


class Boom(Exception):
    """A user's own exception type."""


class Unsendable:
    def __reduce__(self) -> Any:
        raise TypeError("this object cannot be sent")


def square(x: int) -> int:
    return x * x


def fail_at(x: int, bad: int) -> int:
    if x == bad:
        raise Boom(f"no {x}")
    return x


@pytest.fixture(autouse=True)
def no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DISTPOOL_* of the environment: each test says what it configures."""
    for name in list(os.environ):
        if name.startswith("DISTPOOL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def registered() -> Iterator[list[str]]:
    """Names registered by a test, unregistered after it."""
    names: list[str] = []
    yield names
    for name in names:
        BACKENDS.pop(name, None)


# -- registration and options ---------------------------------------------------------------


def test_importing_distpool_joblib_registers_the_backend_and_importing_distpool_does_not():
    code = ("import joblib.parallel as p, distpool\n"
            "before = 'distpool' in p.BACKENDS\n"
            "import distpool.joblib as d\n"
            "print(before, p.BACKENDS['distpool'] is d.DistpoolBackend)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=60, check=True)
    assert completed.stdout.split() == ["False", "True"]


def test_register_gives_defaults_that_parallel_config_and_parallel_override(
        registered: list[str]):
    registered.append("distpool-test")
    distpool.joblib.register("distpool-test", queue="from-register", eager=True)
    with parallel_config(backend="distpool-test"):
        backend, _ = get_active_backend()
        assert isinstance(backend, DistpoolBackend)
        assert backend._settings.queue == "from-register" and backend._settings.eager
    with parallel_config(backend="distpool-test", queue="from-config"):
        backend, _ = get_active_backend()
        assert backend._settings.queue == "from-config" and backend._settings.eager
        # Parallel's own keywords are the call's, over both.
        parallel = Parallel(n_jobs=2, queue="from-parallel")
        with parallel:
            assert parallel._backend._settings.queue == "from-parallel"
            assert parallel._backend._pool is not None
        assert parallel._backend._pool is None  # ended with the call


def test_register_can_make_the_backend_joblibs_default(registered: list[str]):
    import joblib.parallel

    default = joblib.parallel.DEFAULT_BACKEND
    registered.append("distpool-default")
    try:
        distpool.joblib.register("distpool-default", make_default=True, eager=True)
        assert isinstance(Parallel(n_jobs=2)._backend, DistpoolBackend)
    finally:
        joblib.parallel.DEFAULT_BACKEND = default


def test_options_other_than_pool_keywords_are_refused_at_once(registered: list[str]):
    with pytest.raises(TypeError, match="'brokr'.*keywords of distpool.Pool: broker"):
        distpool.joblib.register("distpool-typo", brokr="redis://h:1/0")
    assert "distpool-typo" not in BACKENDS
    with pytest.raises(TypeError, match="'processes': n_jobs sets"):
        parallel_config(backend="distpool", processes=4)
    with pytest.raises(TypeError, match="'checkpoint'"):
        parallel_config(backend="distpool", checkpoint="run")
    with parallel_config(backend="distpool", eager=True), \
            pytest.raises(TypeError, match="'bogus'"):
        Parallel(n_jobs=2, bogus=1)(delayed(square)(i) for i in range(4))


def test_a_setting_that_cannot_be_used_fails_at_parallel_config():
    with pytest.raises(ValueError, match="DISTPOOL_POOL_TTL|pool_ttl"):
        parallel_config(backend="distpool", pool_ttl=-1)


# -- n_jobs --------------------------------------------------------------------------------


class FakeStore:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.queues: list[str] = []

    def worker_slots(self, queue: str) -> int:
        self.queues.append(queue)
        return self.slots


def test_minus_one_is_every_slot_of_the_cluster_as_its_workers_registered_them(
        monkeypatch: pytest.MonkeyPatch):
    store = FakeStore(7)
    monkeypatch.setattr(distpool.joblib, "_store", lambda url: store)
    with parallel_config(backend="distpool", broker="redis://cluster:1/0", secret="k" * 32,
                         queue="q"):
        assert [joblib.effective_n_jobs(n) for n in (-1, -2, -7, -8, -100)] == [7, 6, 1, 1, 1]
        assert [joblib.effective_n_jobs(n) for n in (1, 2, 16)] == [1, 2, 16]  # as asked
        assert joblib.effective_n_jobs(None) == 1  # as joblib's process backends
        with pytest.raises(ValueError, match="n_jobs == 0"):
            joblib.effective_n_jobs(0)
    assert store.queues == ["q"] * 5
    # No worker registered yet: the CPU count, as Pool() takes then.
    store.slots = 0
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    with parallel_config(backend="distpool", broker="redis://cluster:1/0", secret="k" * 32):
        assert joblib.effective_n_jobs(-1) == 3


def test_minus_one_is_the_cpu_count_in_eager_mode_and_on_the_local_cluster(
        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    for options in ({"eager": True}, {}):  # {}: the local cluster, a worker per CPU
        with parallel_config(backend="distpool", **options):
            assert joblib.effective_n_jobs(-1) == 5
            assert joblib.effective_n_jobs(-2) == 4
    assert distpool.joblib._local_clusters == {}  # counted, not started


def test_slots_that_cannot_be_counted_say_where(monkeypatch: pytest.MonkeyPatch):
    class Unreachable:
        def worker_slots(self, queue: str) -> int:
            raise ConnectionRefusedError("refused")

    monkeypatch.setattr(distpool.joblib, "_store", lambda url: Unreachable())
    with parallel_config(backend="distpool", broker="redis://:pw@cluster:1/0",
                         secret="k" * 32), \
            pytest.raises(distpool.BrokerUnavailableError, match=r"\*\*\*@cluster.*refused"):
        joblib.effective_n_jobs(-1)


def test_n_jobs_1_runs_here_without_a_pool_as_joblibs_process_backends_do(sent: list[Any]):
    with parallel_config(backend="distpool", eager=True):
        assert Parallel(n_jobs=1)(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
        assert Parallel()(delayed(square)(i) for i in range(3)) == [0, 1, 4]  # n_jobs unset
    assert sent == []


def test_parallel_backend_the_older_context_manager_means_every_slot_unless_told(
        monkeypatch: pytest.MonkeyPatch, sent: list[Any]):
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    with joblib.parallel_backend("distpool", eager=True), Parallel() as parallel:
        assert parallel._backend._pool._processes == 3  # its n_jobs is -1 by default
        assert parallel(delayed(square)(i) for i in range(6)) == [0, 1, 4, 9, 16, 25]
    assert sent


def test_the_pool_has_n_jobs_processes(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    sizes = []
    with parallel_config(backend="distpool", eager=True):
        for n_jobs in (2, 5, -1):
            with Parallel(n_jobs=n_jobs) as parallel:
                sizes.append(parallel._backend._pool._processes)
    assert sizes == [2, 5, 3]


def test_a_result_store_without_a_broker_is_refused_as_pool_refuses_it():
    with parallel_config(backend="distpool", result_url="redis://results:1/0"), \
            pytest.raises(ValueError, match="without a broker"):
        Parallel(n_jobs=2)(delayed(square)(i) for i in range(4))
    assert distpool.joblib._local_clusters == {}


# -- whole calls, in eager mode ---------------------------------------------------------------


def test_parallel_returns_what_the_default_backend_does_batch_by_batch(sent: list[Any]):
    tasks = [delayed(square)(i) for i in range(2000)]
    with parallel_config(backend="distpool", eager=True):
        parallel = Parallel(n_jobs=2)
        results = parallel(tasks)
    assert results == [i * i for i in range(2000)]
    # joblib's auto-batching sized the batches (tiny tasks: many per batch), and each batch
    # was one task of the pool.
    assert parallel.n_dispatched_tasks == 2000
    assert 2 < parallel.n_dispatched_batches < 400
    assert len(sent) == parallel.n_dispatched_batches


def test_a_fixed_batch_size_is_what_is_sent(sent: list[Any]):
    with parallel_config(backend="distpool", eager=True):
        parallel = Parallel(n_jobs=2, batch_size=10, pre_dispatch="all")
        assert parallel(delayed(square)(i) for i in range(100)) == [i * i for i in range(100)]
    assert parallel.n_dispatched_batches == len(sent) == 10


def test_generators_ordered_and_unordered():
    with parallel_config(backend="distpool", eager=True):
        ordered = Parallel(n_jobs=2, return_as="generator")(
            delayed(square)(i) for i in range(50))
        assert not isinstance(ordered, list)
        assert list(ordered) == [i * i for i in range(50)]
        unordered = Parallel(n_jobs=2, return_as="generator_unordered")(
            delayed(square)(i) for i in range(50))
        assert sorted(unordered) == [i * i for i in range(50)]


def test_an_error_is_raised_as_joblibs_process_backends_raise_it():
    with parallel_config(backend="distpool", eager=True):
        with pytest.raises(Boom) as raised:
            Parallel(n_jobs=2)(delayed(fail_at)(i, 7) for i in range(40))
        assert raised.value.args == ("no 7",)
        cause = raised.value.__cause__
        assert isinstance(cause, _RemoteTraceback)  # the worker's traceback, as loky's
        assert "in fail_at" in str(cause) and "Boom: no 7" in str(cause)
        # The aborted call's pool is gone; the backend serves the next call.
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_a_managed_parallel_serves_calls_after_one_that_failed():
    # (Two tasks: all dispatched at once. Tasks that an aborted call had sliced but not
    # dispatched are run by a managed Parallel's next call, whatever the backend: loky's too.)
    with parallel_config(backend="distpool", eager=True), Parallel(n_jobs=2) as parallel:
        first = parallel._backend._pool
        with pytest.raises(Boom):
            parallel(delayed(fail_at)(i, 1) for i in range(2))
        assert parallel._backend._pool not in (None, first)  # joblib's abort: a new pool
        assert parallel(delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


@pytest.mark.timeout(60)
def test_a_batch_that_cannot_be_sent_fails_the_call_even_when_sent_from_a_callback():
    # The first batches go from this thread; later ones from the pool's delivery thread,
    # once results come back, where an exception would reach no one.
    for bad in (0, 150):
        tasks = [delayed(square)(Unsendable() if i == bad else i) for i in range(200)]
        with parallel_config(backend="distpool", eager=True), \
                pytest.raises(TypeError, match="cannot be sent") as raised:
            Parallel(n_jobs=2, batch_size=1)(tasks)
        assert "distpool cannot serialise" in "".join(getattr(raised.value, "__notes__", []))


def test_grid_search_gives_what_the_default_backend_gives(sent: list[Any]):
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_iris(return_X_y=True)
    grid = {"max_depth": [1, 2, 3, None], "min_samples_leaf": [1, 5]}

    def search() -> Any:
        return GridSearchCV(DecisionTreeClassifier(random_state=0), grid, cv=3,
                            n_jobs=2).fit(X, y)

    with parallel_config(backend="sequential"):
        expected = search()
    with parallel_config(backend="distpool", eager=True):
        found = search()
    assert sent  # the fits went through distpool
    assert found.best_params_ == expected.best_params_
    assert found.best_score_ == expected.best_score_
    for key, values in expected.cv_results_.items():
        if "time" not in key:
            assert list(found.cv_results_[key]) == list(values), key
