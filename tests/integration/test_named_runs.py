"""Named runs against real workers: a client killed mid-map, and the same script run again
(see distpool.client.resume and distpool.client.adoption)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

import distpool
from distpool.errors import CheckpointError
from distpool.store import keys
from tests.support import environment_without_distpool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).parent / "scripts"
RUN = "forecast-w48"  # scripts/named_run.py's run name


def square(x):
    return x * x


def marked_nap(counter_url, seconds):
    marks = redis.Redis.from_url(counter_url)
    marks.set("started", 1)
    time.sleep(seconds)
    marks.set("finished", 1)


class NamedRun:
    """``scripts/named_run.py``, run as a user would run it, its tasks counted in Redis."""

    def __init__(self, redis_server, tmp_path, cluster=None) -> None:
        counter = redis_server.url(7)
        self.runs = redis.Redis.from_url(counter)
        self.runs.delete("runs")
        self.environment = {**environment_without_distpool(), "PYTHONPATH": str(REPO),
                            "DISTPOOL_CHECKPOINT_DIR": str(tmp_path / "journals")}
        # Where the run's hold is kept across hosts: a cluster's result store.
        self.holds = None if cluster is None else redis.Redis.from_url(cluster.result_url)
        if cluster is not None:
            self.environment.update(cluster.environment())
        self.counter = counter

    def command(self, kind: str, processes: int, *more: str) -> list[str]:
        return [sys.executable, str(SCRIPTS / "named_run.py"), kind, str(processes),
                self.counter, *more]

    def counts(self) -> dict[int, int]:
        return {int(x): int(n) for x, n in self.runs.hgetall("runs").items()}

    def kill_once(self, command: list[str], ready) -> dict[int, int]:
        """Run ``command``, SIGKILL it once ``ready(counts)``; the counts then. The dead
        client's hold on the run is let go of at once, rather than after it lapses (10 s:
        see the hold's own test below), so that a rerun starts at once."""
        client = subprocess.Popen(command, env=self.environment, stdout=subprocess.PIPE,
                                  text=True)
        try:
            deadline = time.monotonic() + 60
            while not ready(self.counts()):
                assert time.monotonic() < deadline and client.poll() is None
                time.sleep(0.05)
        finally:
            client.kill()
            client.wait()
            client.stdout.close()
        if self.holds is not None:
            self.holds.delete(keys.run(RUN))
        return self.counts()

    def rerun(self, command: list[str]) -> tuple[list[int], int]:
        rerun = subprocess.run(command, env=self.environment, capture_output=True, text=True,
                               timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        results, resumed = rerun.stdout.splitlines()
        return json.loads(results), int(resumed)


@pytest.mark.parametrize(("kind", "processes", "where"), [
    ("starmap", 3, "cluster"), ("imap_unordered", 2, "cluster"),
    ("starmap", 2, "local cluster")])  # (dies with its client: only the journal resumes)
def test_a_named_run_killed_mid_map_resumes_where_it_stopped(make_cluster, redis_server,
                                                             tmp_path, kind, processes, where):
    # Killed with SIGKILL mid-map, the same script run again (with another number of slots)
    # returns the same results. What had finished ran once; on a cluster, what was in flight
    # too (the rerun takes it over), on the local cluster at most twice.
    run = NamedRun(redis_server, tmp_path,
                   make_cluster(nodes=1, concurrency=2) if where == "cluster" else None)
    ran_before = run.kill_once(run.command(kind, processes),
                               lambda counts: sum(counts.values()) >= 15)
    results, resumed = run.rerun(run.command(kind, processes + 1))  # (another pool size)
    assert results == [x * x for x in range(40)]
    counts = run.counts()
    assert set(counts) == set(range(40)) and max(counts.values()) <= 2
    twice = [x for x, n in counts.items() if n == 2]
    # Twice, at most: those whose results came in the journal's last group commit (0.1 s:
    # two 0.2 s tasks on 2 slots), and on the local cluster the tasks in flight at the kill.
    assert len(twice) <= (2 if where == "cluster" else processes + 2), (twice, ran_before)
    # Run since the kill: by the rerun, or (on a cluster) by the workers for the dead client,
    # and then taken over: those the rerun counts as resumed.
    ran_since = [x for x in range(40) if counts[x] > ran_before.get(x, 0)]
    assert resumed >= 40 - len(ran_since) >= len(ran_before) - len(twice)
    if where == "local cluster":
        assert resumed == 40 - len(ran_since)


@pytest.mark.parametrize("kind", ["starmap", "apply"])
def test_a_rerun_takes_over_the_tasks_its_dead_client_left_running(make_cluster,
                                                                   redis_server, tmp_path,
                                                                   kind):
    # The first items (two of the starmap, one apply) take 8 s; the client dies 1 s into
    # them. The workers go on with them (the run's resume window), and the rerun collects
    # their results instead of sending them again: every item ran once.
    run = NamedRun(redis_server, tmp_path, make_cluster(nodes=1, concurrency=2))
    command = run.command(kind, 2, "8")
    slow = 2 if kind == "starmap" else 1
    run.kill_once(command, lambda counts: all(counts.get(x) for x in range(slow)))
    results, resumed = run.rerun(command)
    assert results == [x * x for x in range(40)]
    assert run.counts() == {x: 1 for x in range(40)}
    assert resumed == slow  # the long ones, from the tasks the dead client sent


def test_terminate_stops_a_named_runs_work_at_once(make_cluster, redis_server, tmp_path):
    # A named run's work outlives its client for the resume window, not its terminate().
    cluster = make_cluster(nodes=1, concurrency=2)
    counter = redis_server.url(7)
    redis.Redis.from_url(counter).delete("started", "finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTPOOL_CHECKPOINT_DIR", str(tmp_path / "journals"))
        pool = distpool.Pool(2, checkpoint="w49", **cluster.pool_kwargs())
        late = pool.apply_async(marked_nap, (counter, 2))
        deadline = time.monotonic() + 30
        while not redis.Redis.from_url(counter).get("started"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pool.terminate()
        with pytest.raises(distpool.PoolTerminatedError):
            late.get(timeout=10)
        time.sleep(3)  # (past the task's end, had it gone on)
        assert redis.Redis.from_url(counter).get("finished") is None


def test_a_run_is_held_by_one_client_of_any_host_and_let_go_when_it_dies(make_cluster,
                                                                          tmp_path):
    # Another journal directory stands for another host: only the result store tells.
    cluster = make_cluster(nodes=1, concurrency=1)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, distpool; "
         "pool = distpool.Pool(1, checkpoint='w48'); print('held', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**environment_without_distpool(), **cluster.environment(), "PYTHONPATH": str(REPO),
             "DISTPOOL_CHECKPOINT_DIR": str(tmp_path / "host-a")})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DISTPOOL_CHECKPOINT_DIR", str(tmp_path / "host-b"))
            with pytest.raises(CheckpointError, match=rf"held by \S+:{holder.pid} \(seen "
                                                      r"through the result store\)"):
                distpool.Pool(1, checkpoint="w48", **cluster.pool_kwargs())
            holder.kill()
            holder.wait()
            started = time.monotonic()
            with distpool.Pool(1, checkpoint="w48", **cluster.pool_kwargs()) as pool:
                assert pool.apply(square, (3,)) == 9
            assert time.monotonic() - started < 20  # its hold lapsed: 10 s at most
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
