"""The cluster across separate hosts, with the user's own package travelling to them.

The client's project (``main.py`` beside its package ``forecast/``) is on the client's host
alone; the workers' hosts have distpool and its dependencies, and nothing of the project.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.projects import FORECAST, MAIN, install, write_files
from tests.support import REPO_ROOT

pytestmark = pytest.mark.integration

#: The project's tasks, slowed down so that a map outlives a fault caused in its middle.
SLOW_TASKS = {"forecast/tasks.py": """\
    import socket
    import time

    from forecast.model import VERSION, Case, solve


    def run(case):
        time.sleep(case.load)
        return Case(case.name, solve(case)), VERSION, socket.gethostname(), __file__
    """}
SLOW_MAIN = MAIN.replace('Case(f"case{i}", float(i))', 'Case(f"case{i}", float(sys.argv[2]))')


def project(hosts, **files):
    return write_files(hosts.client_host.files / "project",
                       {**FORECAST, "main.py": MAIN, **files})


def start_client(hosts, root, *arguments, **environment):
    return hosts.client_host.popen(
        [sys.executable, "main.py", *map(str, arguments)], cwd=str(root),
        env=hosts.environment(**environment), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def results_of(client, timeout=120):
    stdout, stderr = client.communicate(timeout=timeout)
    assert client.returncode == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()], stderr


def test_a_map_of_the_users_package_runs_on_the_other_hosts(hosts):
    for host in hosts.worker_hosts:
        hosts.start_node(host, 2)
    hosts.wait_for_slots(4)
    results, _ = results_of(start_client(hosts, project(hosts, **SLOW_TASKS,
                                                        **{"main.py": SLOW_MAIN}), 16, 0.3))
    assert [(name, load) for name, load, *_ in results] == [(f"case{i}", 0.6)
                                                            for i in range(16)]
    assert {host for _, _, _, host, _ in results} == {"w1", "w2"}
    assert all(path.startswith("/tmp/distpool-cache-") for *_, path in results)
    for host in hosts.worker_hosts:
        log = hosts.log(host)
        assert log.count("extracted to") == 1  # one fetch per node, not one per task
        assert f"slot node-0@{host.name} ready" in log  # the host's name, not %h


def test_status_shows_each_hosts_node(hosts):
    for host in hosts.worker_hosts:
        hosts.start_node(host, 2)
    hosts.wait_for_slots(4)
    nodes = hosts.status()["nodes"]
    assert sorted((node["name"], node["host"], node["slots"]) for node in nodes) == [
        ("node@w1", "w1", 2), ("node@w2", "w2", 2)]


def slow_map_under_way(hosts):
    """A client mapping 12 one-second tasks over both worker hosts (nodes that give a dead
    node's messages to others after 6 s), once w1 runs some of them."""
    for host in hosts.worker_hosts:
        hosts.start_node(host, 2, "--worker-lost-timeout", "6")
    hosts.wait_for_slots(4)
    root = project(hosts, **SLOW_TASKS, **{"main.py": SLOW_MAIN})
    client = start_client(hosts, root, 12, 1.0, DISTPOOL_WORKER_LOST_TIMEOUT="6")
    hosts.wait_for(lambda: any(node["busy"] for node in hosts.status()["nodes"]
                               if node["host"] == "w1"), "w1 to run tasks")
    return client


def test_a_map_survives_a_whole_host_killed_in_its_middle(hosts):
    client = slow_map_under_way(hosts)
    hosts.worker_hosts[0].kill()  # its node, its slots, their tasks: all at once
    results, _ = results_of(client)
    assert sorted(name for name, *_ in results) == sorted(f"case{i}" for i in range(12))
    assert {host for _, _, _, host, _ in results[-4:]} == {"w2"}


def test_a_map_survives_a_host_cut_off_in_its_middle(hosts):
    client = slow_map_under_way(hosts)
    cut = hosts.worker_hosts[0]
    cut.cut()
    try:
        time.sleep(15)  # past its holds' lapse: its messages go to the other host
    finally:
        cut.mend()
    results, _ = results_of(client)
    names = [name for name, *_ in results]
    assert sorted(names) == sorted(f"case{i}" for i in range(12))  # each once


def test_terminate_stops_the_pools_work_on_every_host(hosts):
    for host in hosts.worker_hosts:
        hosts.start_node(host, 2)
    hosts.wait_for_slots(4)
    root = project(hosts, **SLOW_TASKS)
    script = root / "terminate.py"
    script.write_text(
        "import sys, time\n"
        "from distpool import Pool\n"
        "from forecast.model import Case\n"
        "from forecast.tasks import run\n"
        "with Pool() as pool:\n"
        "    result = pool.map_async(run, [Case(str(i), 600.0) for i in range(8)], chunksize=1)\n"
        "    print('submitted', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    pool.terminate()\n"
        "    print('terminated', flush=True)\n")
    client = hosts.client_host.popen(
        [sys.executable, str(script)], cwd=str(root), env=hosts.environment(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "submitted"
        hosts.wait_for(lambda: sum(node["busy"] for node in hosts.status()["nodes"]) == 4,
                       "every slot to run a task")
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "terminated"
        hosts.wait_for(lambda: sum(node["busy"] or 0 for node in hosts.status()["nodes"]
                                   if node["alive"]) == 0, "every slot to be idle", 30)
        assert client.wait(30) == 0
    finally:
        client.kill()
        client.wait()


def test_an_installed_module_of_another_version_on_a_host_is_named_with_it(hosts):
    for version, host in zip(("1.0", "2.0"), hosts.worker_hosts):
        install(host.files / "site-packages", "simwrap", version)
        hosts.start_node(host, 1, PYTHONPATH=f"{REPO_ROOT}:/tmp/host/site-packages")
    hosts.wait_for_slots(2)
    install(hosts.client_host.files / "site-packages", "simwrap", "1.0")
    root = project(hosts, **{"forecast/tasks.py": """\
        import socket
        import time

        import simwrap


        def run(case):
            time.sleep(0.2)
            return case, simwrap.__version__, socket.gethostname(), ""
        """})
    client = start_client(hosts, root, 8, PYTHONPATH=(
        f"{REPO_ROOT}:{hosts.client_host.files / 'site-packages'}"))
    results, stderr = results_of(client)
    assert {(version, host) for _, _, version, host, _ in results} == {("1.0", "w1"),
                                                                      ("2.0", "w2")}
    assert "simwrap is 1.0 on the client but is 2.0 on worker host w2" in stderr
    assert "w1" not in stderr


def test_a_node_behind_a_slow_link_serves_a_map(hosts):
    """w2 reaches Redis through a proxy that delays each way by 25 ms (a distant site)."""
    slow = f"{hosts.broker_host.address}:16379"
    proxy = hosts.broker_host.popen(
        [sys.executable, "-m", "tests.hosts.proxy", slow,
         f"{hosts.broker_host.address}:6379", "0.025"],
        env=hosts.environment(), stdout=subprocess.PIPE, text=True)
    assert proxy.stdout.readline().strip() == "listening"
    hosts.start_node(hosts.worker_hosts[1], 2, "--broker", f"redis://{slow}/0")
    hosts.wait_for_slots(2)
    ping = hosts.worker_hosts[1].run(
        [sys.executable, "-c", "import redis, time; client = redis.Redis.from_url("
         f"'redis://{slow}/0'); client.ping(); started = time.monotonic(); client.ping(); "
         "print(time.monotonic() - started)"], env=hosts.environment())
    assert float(ping.stdout) >= 0.05  # the proxy's two delays
    results, _ = results_of(start_client(hosts, project(hosts, **SLOW_TASKS,
                                                        **{"main.py": SLOW_MAIN}), 8, 0.2))
    assert [name for name, *_ in results] == [f"case{i}" for i in range(8)]
    assert {host for _, _, _, host, _ in results} == {"w2"}


def test_without_shipping_the_other_hosts_cannot_import_the_users_package(hosts):
    """What the tests above prove rests on this: the workers' hosts do not have the project."""
    hosts.start_node(hosts.worker_hosts[0], 1)
    hosts.wait_for_slots(1)
    client = start_client(hosts, project(hosts), 1, DISTPOOL_SHIP="0")
    _, stderr = client.communicate(timeout=120)
    assert client.returncode != 0
    assert "No module named 'forecast'" in stderr
