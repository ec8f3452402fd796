"""distpool against a real Redis and real ``distpool worker`` processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import distpool
from distpool.brokers.redis_publisher import RedisPublisher
from distpool.config import resolve
from distpool.errors import (
    BrokerUnavailableError,
    IncompatibleEnvelopeError,
    PoolTerminatedError,
    TaskTimeoutError,
    WorkerLostError,
)
from distpool.platform import process_exists
from distpool.wire import envelope
from tests.support import environment_without_distpool, wait_until

SCRIPTS = Path(__file__).parent / "scripts"
EXAMPLES = Path(__file__).parents[2] / "examples"

pytestmark = pytest.mark.integration


def square(x):
    return x * x


def sleep_for(seconds):
    time.sleep(seconds)
    return os.getpid()


_initialised = {"count": 0}


def count_initialisation():
    _initialised["count"] += 1


def initialisations(_):
    return _initialised["count"]


def die_the_first_time(marker):
    """Kill this worker process unless ``marker`` exists; its task must then run again."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return int(path.read_text()) != os.getpid()


def run_script(path: Path, cwd: Path, env_extra=None, timeout=120):
    env = environment_without_distpool()
    env.pop("PYTHONPATH", None)
    env.update(env_extra or {})
    completed = subprocess.run([sys.executable, str(path)], cwd=cwd, env=env,
                               capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def cluster_env(cluster):
    return cluster.environment()


def test_a_multiprocessing_script_prints_the_same_with_only_its_import_switched(
        shared_cluster, tmp_path):
    switched = (EXAMPLES / "forecast.py").read_text()
    distpool_import = "from distpool import Pool  # was: from multiprocessing import Pool\n"
    assert distpool_import in switched
    (tmp_path / "mp").mkdir()
    (tmp_path / "dp").mkdir()
    mp_script = tmp_path / "mp" / "forecast.py"
    dp_script = tmp_path / "dp" / "forecast.py"
    mp_script.write_text(switched.replace(distpool_import, "from multiprocessing import Pool\n"))
    dp_script.write_text(switched)
    expected = run_script(mp_script, tmp_path / "mp")
    # The workers run in directories of their own, where forecast.py cannot be imported.
    output = run_script(dp_script, tmp_path / "dp", cluster_env(shared_cluster))
    assert "TaskResult(23," in expected and "same class: True" in expected
    assert output == expected


def test_lambdas_and_closures_of_main_run_on_workers(shared_cluster, tmp_path):
    shutil.copy(SCRIPTS / "closures.py", tmp_path)
    out = run_script(tmp_path / "closures.py", tmp_path, cluster_env(shared_cluster))
    assert out.splitlines() == ["[100, 200]", "[106, 107]"]


def test_multiprocessing_still_works_after_distpool_in_one_process(shared_cluster, tmp_path):
    shutil.copy(SCRIPTS / "fork_after_distpool.py", tmp_path)
    out = run_script(tmp_path / "fork_after_distpool.py", tmp_path, cluster_env(shared_cluster),
                     timeout=60)
    assert out.strip() == "ok"


def test_default_processes_is_the_slots_the_workers_report(shared_cluster):
    with distpool.Pool(**shared_cluster.pool_kwargs()) as pool:
        assert pool._processes == 4  # 2 nodes x 2 processes


def test_initializer_runs_once_per_process_and_maxtasksperchild_restarts_it(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=1)
    with distpool.Pool(1, initializer=count_initialisation, **cluster.pool_kwargs()) as pool:
        assert pool.map(initialisations, range(4), chunksize=1) == [1, 1, 1, 1]
    with distpool.Pool(1, initializer=count_initialisation, maxtasksperchild=2,
                       **cluster.pool_kwargs()) as pool:
        # A new pool initialises again (the slot's process has run the first pool); then
        # every 2 tasks the process is replaced, and a fresh one initialises once.
        assert pool.map(initialisations, range(6), chunksize=1) == [2, 2, 1, 1, 1, 1]


def test_terminate_stops_running_tasks_and_workers_serve_other_pools_at_once(make_cluster):
    cluster = make_cluster(nodes=1, concurrency=2)
    pool = distpool.Pool(2, **cluster.pool_kwargs())
    pool_id = pool._pool_id
    result = pool.map_async(sleep_for, [60] * 10, chunksize=1)
    time.sleep(1.0)  # both tasks are running
    started = time.monotonic()
    pool.terminate()
    assert time.monotonic() - started < 5
    with pytest.raises(PoolTerminatedError):
        result.get(timeout=5)
    pool.join()
    started = time.monotonic()
    with distpool.Pool(2, **cluster.pool_kwargs()) as other:
        assert other.map(square, range(4), chunksize=1) == [0, 1, 4, 9]
    assert time.monotonic() - started < 10  # not waiting out the 60 s sleeps
    assert cluster.redis.client.keys(f"distpool:pool:{pool_id}:*") == []


def pid_then_sleep(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(60)


def test_a_slot_running_a_revoked_task_ends_while_its_pool_lives(make_cluster, tmp_path):
    # The revoke alone (the client's own broadcast, as terminate() sends it): the pool stays
    # live, so the slot's watchdog has no reason to end the task.
    cluster = make_cluster(nodes=1, concurrency=1)
    marker = tmp_path / "pid"
    pool = distpool.Pool(1, **cluster.pool_kwargs())
    publisher = RedisPublisher(resolve(**cluster.pool_kwargs(), environ={}))
    try:
        pool.apply_async(pid_then_sleep, (str(marker),))
        wait_until(lambda: marker.exists() and marker.read_text(), 30, "the task to start")
        slot = int(marker.read_text())
        publisher.revoke([f"{pool._pool_id}:0:0"])
        wait_until(lambda: not process_exists(slot), 20, "the revoked task's slot to end")
    finally:
        publisher.close()
        pool.terminate()


def test_a_task_whose_worker_process_dies_runs_again(make_cluster, tmp_path):
    cluster = make_cluster(nodes=1, concurrency=2)
    markers = [str(tmp_path / f"attempted-{i}") for i in range(4)]
    with distpool.Pool(2, **cluster.pool_kwargs()) as pool:
        # Each task kills its process once; the re-run happens in a replacement process.
        assert pool.map(die_the_first_time, markers, chunksize=1) == [True] * 4


def test_nothing_of_a_finished_pool_is_left_in_redis(shared_cluster):
    with distpool.Pool(2, **shared_cluster.pool_kwargs()) as pool:
        pool_id = pool._pool_id
        assert pool.map(square, range(20)) == [x * x for x in range(20)]
        pool.close()
        pool.join()
    client = shared_cluster.redis.client
    assert client.keys(f"distpool:pool:{pool_id}:*") == []
    # Lasting records of what consumers hold are a hash (kombu's delivery records) or held
    # lists: those of a node another test killed stay until a sweep puts them back.
    for key in client.keys("distpool:*"):
        assert (client.ttl(key) != -1 or client.type(key) in (b"zset", b"hash")
                or key.startswith(b"distpool:held:")), key


def test_a_worker_on_another_version_fails_the_task_clearly(shared_cluster, monkeypatch):
    monkeypatch.setattr(envelope, "PYTHON_VERSION", "2.7")
    with distpool.Pool(1, **shared_cluster.pool_kwargs()) as pool, \
            pytest.raises(IncompatibleEnvelopeError, match="Python 2.7"):
        pool.apply(square, (2,))


def test_unreachable_broker_fails_fast_with_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
            distpool.Pool(1, broker=f"redis://:secret@127.0.0.1:{port}/0", insecure=True)
    assert time.monotonic() - started < 15


def test_workers_stay_ordinary_celery_workers(shared_cluster):
    celery = shutil.which("celery", path=os.path.dirname(sys.executable)) or "celery"
    completed = subprocess.run(
        [celery, "--broker", shared_cluster.broker, "inspect", "ping", "--timeout", "5"],
        capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    for worker in shared_cluster.workers:
        # Each slot is a node of its own, named after the worker: <node>-<slot>@<host>.
        node, _, _ = worker.name.partition("@")
        for slot in range(worker.concurrency):
            assert f"{node}-{slot}@{socket.gethostname()}: OK" in completed.stdout


def _rabbitmq_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _rabbitmq_reachable(), reason="no RabbitMQ on 127.0.0.1:5672")
def test_rabbitmq_as_broker_with_redis_results(redis_server):
    from tests.support import Cluster, ignore_the_soft_limit

    cluster = Cluster(redis_server, nodes=1, concurrency=2,
                      broker="amqp://guest:guest@127.0.0.1:5672//")
    try:
        # Seconds, not one: each fresh pool process imports this module, and pytest with it,
        # under the limit, which took over a second on a loaded machine without bytecode.
        with distpool.Pool(2, task_timeout=3, **cluster.pool_kwargs()) as pool:
            assert pool.map(square, range(10)) == [x * x for x in range(10)]
            assert list(pool.imap_unordered(square, range(5))) != []
            # RabbitMQ re-queues a dead slot's message itself; the attempts are still counted.
            with pytest.raises(WorkerLostError, match="died 3 times"):
                pool.apply(os._exit, (3,))
            with pytest.raises(TaskTimeoutError, match="task_timeout"):
                pool.apply(ignore_the_soft_limit, (60,))
            assert pool.apply(square, (5,)) == 25
    finally:
        cluster.stop()
