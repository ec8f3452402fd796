"""The embedded local cluster: Pool() with no broker, LocalCluster, ``distpool cluster``."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import distpool
from distpool.local.cluster import LocalCluster
from tests.support import (
    DUMP_STACKS_ON_SIGUSR1,
    EXIT_TIMEOUT,
    REPO_ROOT,
    Worker,
    environment_without_distpool,
    exit_status,
    stop_process_group,
)

SCRIPTS = Path(__file__).parent / "scripts"

pytestmark = pytest.mark.integration


def square(x):
    return x * x


def getpid(_):
    time.sleep(0.2)
    return os.getpid()


def cluster_directories():
    """A local cluster's directory, and its node's slot state directory."""
    return {p for p in os.listdir(tempfile.gettempdir())
            if p.startswith(("distpool-cluster-", "distpool-slots-"))}


def descendants(pid):
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def wait_gone(processes, timeout):
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


def env_without_distpool():
    return environment_without_distpool(PYTHONPATH=str(REPO_ROOT))


@pytest.fixture
def no_configured_broker(monkeypatch):
    for name in ("DISTPOOL_BROKER_URL", "DISTPOOL_RESULT_URL", "DISTPOOL_QUEUE"):
        monkeypatch.delenv(name, raising=False)


def test_pool_with_no_broker_starts_a_private_cluster_and_stops_it(no_configured_broker):
    before = cluster_directories()
    with distpool.Pool(2) as pool:
        cluster = pool._cluster
        assert cluster is not None and ":6379/" not in cluster.broker_url
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        processes = descendants(cluster._supervisor.pid)
        assert len(processes) >= 4  # supervisor, redis-server, worker and its 2 processes
        assert len(cluster_directories() - before) == 2  # its own, its node's slot states
    assert wait_gone(processes, timeout=5) == []
    # Nothing of its own is left (its stop also removes what killed nodes left before it).
    assert cluster_directories() - before == set()


def test_close_and_join_stop_the_private_cluster(no_configured_broker):
    pool = distpool.Pool(1)
    assert pool.apply(square, (3,)) == 9
    processes = descendants(pool._cluster._supervisor.pid)
    pool.close()
    pool.join()
    assert wait_gone(processes, timeout=5) == []


def test_garbage_collection_stops_the_private_cluster(no_configured_broker):
    import gc
    import warnings

    pool = distpool.Pool(1)
    assert pool.apply(square, (3,)) == 9
    processes = descendants(pool._cluster._supervisor.pid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del pool
        gc.collect()
    assert wait_gone(processes, timeout=5) == []


def test_sigkill_of_the_parent_leaves_no_orphans(tmp_path):
    before = cluster_directories()
    parent = subprocess.Popen([sys.executable, str(SCRIPTS / "embedded_then_wait.py")],
                              cwd=tmp_path, env=env_without_distpool(),
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pids = json.loads(parent.stdout.readline())
        processes = [psutil.Process(pid) for pid in pids]
        assert len(processes) >= 4
        parent.kill()
        parent.wait()
        assert wait_gone(processes, timeout=5) == []
        deadline = time.monotonic() + 5
        while cluster_directories() - before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cluster_directories() - before == set()
    finally:
        stop_process_group(parent)
        parent.stdout.close()


def test_works_where_no_redis_answers_on_6379(tmp_path):
    # A network namespace of its own has only a loopback interface, with nothing on it.
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here")
    script = SCRIPTS / "embedded_map.py"
    completed = subprocess.run(
        ["unshare", "-n", "sh", "-c",
         f"ip link set lo up && ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && "
         f"exec {sys.executable} {script}"],
        cwd=tmp_path, env=env_without_distpool(), capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[0, 1, 4, 9, 16, 25]"


def test_two_local_clusters_side_by_side():
    with LocalCluster(workers=1) as first, LocalCluster(workers=1) as second:
        assert first.broker_url != second.broker_url
        with distpool.Pool(1, broker=first.broker_url, secret=first.secret) as a, \
                distpool.Pool(1, broker=second.broker_url, secret=second.secret) as b:
            assert a.map(square, range(5)) == b.map(square, range(5)) == [0, 1, 4, 9, 16]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_process_forked_while_the_cluster_runs_does_not_hold_up_its_stop():
    # A multiprocessing worker forked meanwhile inherits the pipe whose end tells the
    # supervisor to stop. Held open there, the stop waited out its timeout and killed it.
    cluster = LocalCluster(workers=1).start()
    supervisor = cluster._supervisor
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    child.start()
    try:
        cluster.stop()
        assert supervisor.returncode == 0  # it stopped on its own, not killed
    finally:
        child.kill()
        child.join()


def test_pools_share_a_local_cluster_and_hand_started_workers_attach():
    with LocalCluster(workers=1) as cluster:
        worker = Worker(cluster.broker_url, "distpool", concurrency=1, secret=cluster.secret)
        try:
            with distpool.Pool(broker=cluster.broker_url, secret=cluster.secret) as pool:
                deadline = time.monotonic() + 30
                while pool._engine is not None and time.monotonic() < deadline:
                    pids = set(pool.map(getpid, range(8), chunksize=1))
                    if len(pids) == 2:
                        break
                assert len(pids) == 2  # the cluster's worker process and the attached one
            with distpool.Pool(1, broker=cluster.broker_url, secret=cluster.secret) as other:
                assert other.apply(square, (5,)) == 25
        finally:
            worker.stop()


def test_distpool_cluster_command_runs_until_interrupted(tmp_path):
    errors = tmp_path / "cluster.err"
    with open(errors, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", DUMP_STACKS_ON_SIGUSR1 + "import sys; from distpool.cli "
             "import main; sys.exit(main(sys.argv[1:]))", "cluster", "--workers", "1"],
            env=env_without_distpool(), stdout=subprocess.PIPE, stderr=stderr, text=True,
            start_new_session=True)
    try:
        first_line = process.stdout.readline()
        url = first_line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("redis://127.0.0.1:"), first_line
        exports = process.stdout.readline().split()
        secret_file = next(word.split("=", 1)[1] for word in exports
                           if word.startswith("DISTPOOL_SECRET_FILE="))
        assert os.stat(secret_file).st_mode & 0o077 == 0  # readable by its owner only
        with distpool.Pool(1, broker=url, secret=Path(secret_file).read_text()) as pool:
            assert pool.apply(square, (4,)) == 16
        processes = descendants(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        # A clean exit, and nothing left behind; how soon (about 1.1 s), the benchmarks say.
        assert exit_status(process, within=EXIT_TIMEOUT, stacks_in=errors) == 0
        assert wait_gone(processes, timeout=5) == []
    finally:
        stop_process_group(process)
        process.stdout.close()


def test_demo_runs_both_pools_and_their_results_agree(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "distpool", "demo", "--tasks", "6", "--scale", "0.05"],
        cwd=tmp_path, env=env_without_distpool(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "results agree: yes" in completed.stdout
    assert "multiprocessing" in completed.stderr and "6/6" in completed.stderr  # progress bars


def test_tasks_fail_at_once_when_the_private_clusters_worker_keeps_exiting(tmp_path,
                                                                           monkeypatch):
    import distpool.brokers.celery_publisher  # noqa: F401  (this process's kombu, first)

    broken = tmp_path / "kombu"
    broken.mkdir()
    (broken / "__init__.py").write_text('raise ImportError("broken on purpose")\n')
    monkeypatch.syspath_prepend(str(tmp_path))  # what the cluster's workers import first
    started = time.monotonic()
    with distpool.Pool(1, pool_ttl=300) as pool:
        result = pool.apply_async(abs, (-1,))
        with pytest.raises(distpool.BrokerUnavailableError, match="worker kept exiting"):
            result.get(timeout=60)
        assert time.monotonic() - started < 60  # long before pool_ttl
