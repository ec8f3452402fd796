"""Named runs (distpool.client.resume) in eager mode: the journal on disk, no services.

A run "dies" here by being left unfinished (``terminate()``, as the finalizer of a killed
client's pool would): its journal stays, and the same calls under the same name resume.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import distpool
from distpool.client import journal, resume
from distpool.errors import CheckpointError

RUNS: list[object] = []  # what the functions below ran, in this process (eager mode)
REPO = Path(__file__).resolve().parents[3]


def square(x):
    RUNS.append(x)
    return x * x


def cube(x):
    RUNS.append(x)
    return x ** 3


def add(x, y):
    RUNS.append((x, y))
    return x + y


def fails_on_three(x):
    RUNS.append(x)
    if x == 3:
        raise ValueError("three")
    return x


@pytest.fixture(autouse=True)
def journals(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTPOOL_CHECKPOINT_DIR", str(tmp_path / "journals"))
    monkeypatch.delenv("DISTPOOL_CHECKPOINT", raising=False)
    RUNS.clear()
    return tmp_path / "journals"


def left_unfinished(name, calls):
    """Run ``calls(pool)`` on a named pool that is then terminated: its journal stays."""
    pool = distpool.Pool(2, eager=True, checkpoint=name)
    try:
        return calls(pool)
    finally:
        pool.terminate()
        pool.join()


def test_a_rerun_takes_each_call_s_results_from_the_journal():
    def calls(pool):
        return (pool.map(square, range(10), chunksize=3), pool.apply(add, (2, 3)),
                pool.starmap(add, [(1, 1), (2, 2)]))

    first = left_unfinished("w48", calls)
    assert len(RUNS) == 13
    RUNS.clear()
    pool = distpool.Pool(2, eager=True, checkpoint="w48")
    try:
        assert calls(pool) == first
        assert RUNS == [] and pool.resumed == 13
    finally:
        pool.terminate()


def test_each_rerun_keeps_what_every_run_before_it_journaled():
    # Each run journals its call again; a third run still finds the first run's results
    # (the chaos soak with the client killed again and again found them dropped).
    left_unfinished("w48", lambda pool: pool.map(square, range(4)))
    left_unfinished("w48", lambda pool: pool.map(square, range(8)))
    assert sorted(RUNS) == list(range(8))  # (the second run computed only 4 to 7)
    RUNS.clear()
    pool = distpool.Pool(2, eager=True, checkpoint="w48")
    try:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert RUNS == [8, 9] and pool.resumed == 8
    finally:
        pool.terminate()


def test_only_a_changed_item_is_computed_again_and_chunks_are_made_afresh():
    left_unfinished("w48", lambda pool: pool.map(square, range(10), chunksize=5))
    RUNS.clear()
    items = [*range(9), 100]
    pool = distpool.Pool(4, eager=True, checkpoint="w48")
    try:
        assert pool.map(square, items) == [x * x for x in items]
        assert RUNS == [100] and pool.resumed == 9
    finally:
        pool.terminate()


def test_imap_yields_in_order_and_imap_unordered_the_journaled_first():
    left_unfinished("w48", lambda pool: (list(pool.imap(square, range(6), chunksize=2)),
                                         list(pool.imap_unordered(cube, [1, 2]))))
    RUNS.clear()
    pool = distpool.Pool(2, eager=True, checkpoint="w48")
    try:
        assert list(pool.imap(square, range(8), chunksize=2)) == [x * x for x in range(8)]
        assert sorted(RUNS) == [6, 7]
        unordered = list(pool.imap_unordered(cube, [1, 2, 3]))
        assert unordered[:2] == [1, 8] and sorted(unordered) == [1, 8, 27]
        assert pool.resumed == 8
    finally:
        pool.terminate()


def test_failures_are_not_journaled_they_are_computed_again():
    with pytest.raises(ValueError):
        left_unfinished("w48", lambda pool: pool.map(fails_on_three, range(5), chunksize=1))
    RUNS.clear()
    pool = distpool.Pool(2, eager=True, checkpoint="w48")
    try:
        with pytest.raises(ValueError, match="three"):
            pool.map(fails_on_three, range(5), chunksize=1)
        assert RUNS == [3]
    finally:
        pool.terminate()


def test_another_function_at_a_call_is_an_error_naming_both():
    left_unfinished("w48", lambda pool: pool.map(square, range(3)))
    pool = distpool.Pool(2, eager=True, checkpoint="w48")
    try:
        with pytest.raises(CheckpointError, match=r"call 1: this script calls "
                           r"map\(.*test_resume.cube\), where the journaled run called "
                           r"map\(.*test_resume.square\).*checkpoints rm w48"):
            pool.map(cube, range(3))
    finally:
        pool.terminate()


def adder(k):
    def plus(x):
        return x + k
    return plus


def test_the_same_function_with_other_code_warns_and_reuses():
    left_unfinished("w48", lambda pool: pool.map(adder(1), range(3)))
    pool = distpool.Pool(2, eager=True, checkpoint="w48")
    try:
        with pytest.warns(UserWarning, match=r"the code of .*adder.<locals>.plus changed"):
            assert pool.map(adder(2), range(3)) == [1, 2, 3]  # the journaled results
    finally:
        pool.terminate()


def test_a_run_that_finished_cleanly_starts_afresh():
    with distpool.Pool(2, eager=True, checkpoint="w48") as pool:
        pool.map(square, range(4))
    RUNS.clear()
    with distpool.Pool(2, eager=True, checkpoint="w48") as pool:
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
        assert pool.resumed == 0 and len(RUNS) == 4


def test_a_torn_last_record_costs_only_that_result(journals):
    left_unfinished("w48", lambda pool: pool.map(square, range(4), chunksize=1))
    log = journals / "w48" / journal.RECORDS_FILE
    log.write_bytes(log.read_bytes()[:-3])  # the client died mid-write
    RUNS.clear()
    pool = distpool.Pool(2, eager=True, checkpoint="w48")
    try:
        assert pool.map(square, range(4), chunksize=1) == [0, 1, 4, 9]
        assert RUNS == [3]
    finally:
        pool.terminate()


def test_pools_named_by_the_environment_are_numbered_in_creation_order(monkeypatch):
    monkeypatch.setattr(resume, "_numbering", iter(range(1, 100)))
    environ = {"DISTPOOL_CHECKPOINT": "forecast"}
    assert [resume.run_name(None, environ) for _ in range(3)] == [
        "forecast", "forecast.2", "forecast.3"]
    assert resume.run_name("given", environ) == "given"
    assert resume.run_name(None, {}) is None
    with pytest.raises(ValueError, match="a run name is letters, digits"):
        resume.run_name("../etc", {})


def test_a_run_held_by_another_process_is_refused_naming_it(journals):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, distpool; "
         "pool = distpool.Pool(1, eager=True, checkpoint='w48'); print('held', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError, match=rf"held by process {holder.pid} on"):
            distpool.Pool(1, eager=True, checkpoint="w48")
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
    pool = distpool.Pool(1, eager=True, checkpoint="w48")  # released when it died
    pool.terminate()


def test_two_pools_of_this_process_cannot_hold_one_run():
    pool = distpool.Pool(1, eager=True, checkpoint="w48")
    try:
        with pytest.raises(CheckpointError, match=rf"held by process {os.getpid()} on"):
            distpool.Pool(1, eager=True, checkpoint="w48")
    finally:
        pool.terminate()


def test_an_executor_journals_nothing(monkeypatch, journals):
    monkeypatch.setenv("DISTPOOL_CHECKPOINT", "w48")
    with distpool.Executor(1, eager=True) as executor:
        assert executor.submit(square, 3).result() == 9
    assert not journals.exists()
