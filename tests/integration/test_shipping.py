"""The user's own code reaches workers that do not have it, on one host: each worker runs
in a directory of its own, with nothing of the client's project on its import path. (The
multi-host tests, ``tests/hosts``, do the same across network and mount namespaces.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.projects import FORECAST, MAIN, install, write_files
from tests.support import REPO_ROOT, Worker, wait_for_slots

pytestmark = pytest.mark.integration


def client(project, cluster, cases, **environment):
    """Run the project's ``main.py`` against ``cluster``; its results, one list a case."""
    completed = subprocess.run(
        [sys.executable, "main.py", str(cases)], cwd=project, capture_output=True, text=True,
        timeout=120, env={**os.environ, **cluster.environment(), "PYTHONPATH": str(REPO_ROOT),
                          **environment})
    assert completed.returncode == 0, completed.stderr
    return [json.loads(line) for line in completed.stdout.splitlines()], completed.stderr


def project(root, version="one", **extra):
    files = {**FORECAST, "main.py": MAIN, **extra}
    files["forecast/model.py"] = files["forecast/model.py"].replace('"one"', repr(version))
    return write_files(root, files)


def test_the_users_package_runs_on_workers_that_do_not_have_it(make_cluster, tmp_path):
    cluster = make_cluster(nodes=1, concurrency=2,
                           environment={"DISTPOOL_CACHE_DIR": str(tmp_path / "cache")})
    results, _ = client(project(tmp_path / "project"), cluster, 6)
    assert [(name, load) for name, load, *_ in results] == [(f"case{i}", 2.0 * i)
                                                            for i in range(6)]
    bundles = tmp_path / "cache" / "bundles"
    assert all(path.startswith(str(bundles)) for *_, path in results)  # run from its bundle
    assert len([d for d in bundles.iterdir() if d.is_dir()]) == 1
    log = cluster.workers[0].log()
    assert log.count("extracted to") == 1  # one fetch for the node, not one per task


def test_an_edited_package_travels_anew(make_cluster, tmp_path):
    cluster = make_cluster(nodes=1, concurrency=2)
    root = project(tmp_path / "project", "one")
    assert {version for _, _, version, *_ in client(root, cluster, 2)[0]} == {"one"}
    project(tmp_path / "project", "two")
    assert {version for _, _, version, *_ in client(root, cluster, 2)[0]} == {"two"}


def test_two_versions_of_one_package_run_side_by_side_each_its_own(make_cluster, tmp_path):
    cluster = make_cluster(nodes=1, concurrency=2)
    roots = [project(tmp_path / version, version) for version in ("one", "two")]
    clients = [subprocess.Popen(
        [sys.executable, "main.py", "12"], cwd=root, stdout=subprocess.PIPE, text=True,
        env={**os.environ, **cluster.environment(), "PYTHONPATH": str(REPO_ROOT)})
        for root in roots]
    outputs = [process.communicate(timeout=120)[0] for process in clients]
    assert [process.returncode for process in clients] == [0, 0]
    for version, output in zip(("one", "two"), outputs):
        versions = [json.loads(line)[2] for line in output.splitlines()]
        assert versions == [version] * 12
    # A slot that had imported one version put the other's messages back and was replaced.
    assert "goes back to the queue" in cluster.workers[0].log()


def test_a_prefork_worker_fails_the_task_it_cannot_load_naming_both_bundles(make_cluster,
                                                                             tmp_path):
    cluster = make_cluster(nodes=1, concurrency=1, extra_args=["--pool", "prefork"])
    client(project(tmp_path / "one", "one"), cluster, 1)
    completed = subprocess.run(
        [sys.executable, "main.py", "1"], cwd=project(tmp_path / "two", "two"),
        capture_output=True, text=True, timeout=120,
        env={**os.environ, **cluster.environment(), "PYTHONPATH": str(REPO_ROOT)})
    assert completed.returncode != 0
    assert "ModuleConflictError" in completed.stderr
    assert "has imported forecast already (from bundle" in completed.stderr


SOLVER = {"forecast/tasks.py": """\
    import simwrap

    def run(case):
        return case, simwrap.__version__, "", ""
    """}


@pytest.mark.parametrize("strict", [False, True])
def test_an_installed_module_of_another_version_on_a_worker_is_reported(make_cluster,
                                                                        tmp_path, strict):
    ours = install(tmp_path / "client" / "site-packages", "simwrap", "1.0")
    theirs = install(tmp_path / "worker" / "site-packages", "simwrap", "2.0")
    cluster = make_cluster(nodes=1, concurrency=1,
                           environment={"PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{theirs}"})
    root = project(tmp_path / "project", **SOLVER)
    environment = {**os.environ, **cluster.environment(),
                   "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{ours}"}
    if strict:
        environment["DISTPOOL_STRICT_VERSIONS"] = "1"
    completed = subprocess.run([sys.executable, "main.py", "2"], cwd=root, capture_output=True,
                               text=True, timeout=120, env=environment)
    difference = "simwrap is 1.0 on the client but is 2.0 on worker host "
    if strict:
        assert completed.returncode != 0
        assert "VersionMismatchError" in completed.stderr and difference in completed.stderr
    else:
        assert completed.returncode == 0, completed.stderr
        assert completed.stderr.count(difference) == 1  # once, however many tasks
        assert "VersionSkewWarning" in completed.stderr
        assert [json.loads(line)[2] for line in completed.stdout.splitlines()] == ["2.0"] * 2


LATE_JOINER_MAIN = """\
    import sys

    from distpool import Pool
    from forecast.model import Case
    from forecast.tasks import run

    with Pool() as pool:
        for round in range(2):
            print(pool.map(run, [Case("case", 1.0)])[0][1], flush=True)
            sys.stdin.readline()
    """


def test_a_node_that_joins_later_still_finds_the_bundle_and_the_pool_leaves_none(
        make_cluster_on_own_redis, tmp_path):
    # Each node a cache of its own, as on machines of their own; a Redis of its own, where
    # nothing but this pool leaves keys.
    cluster = make_cluster_on_own_redis(
        nodes=1, concurrency=1, environment={"DISTPOOL_CACHE_DIR": str(tmp_path / "first")})
    root = project(tmp_path / "project", "one", **{"main.py": LATE_JOINER_MAIN})
    client = subprocess.Popen(
        [sys.executable, "main.py"], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env={**os.environ, **cluster.environment(), "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert client.stdout.readline().strip() == "one"
        cluster.workers[0].stop()  # the node that fetched it is gone; a new one joins
        cluster.workers.append(Worker(
            cluster.broker, cluster.queue, 1, cluster.result_url, secret=cluster.secret,
            environment={"DISTPOOL_CACHE_DIR": str(tmp_path / "second")}))
        wait_for_slots(cluster.result_url, cluster.queue, 1, cluster.workers[1:])
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "one"
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.wait(60) == 0
    finally:
        client.kill()
        client.wait()
    assert "extracted to" in cluster.workers[1].log()
    assert not cluster.redis.client.keys("distpool:pool:*")
