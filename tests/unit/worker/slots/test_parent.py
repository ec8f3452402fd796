"""The slot parent's decisions (distpool.worker.slots.parent), over stand-in processes and
broker, on a fake clock; and how a node chooses its process model (distpool.worker.node) and
starts a slot (distpool.worker.slots.child), without starting one."""

from __future__ import annotations

import logging
import pickle
import time

import pytest
from celery.utils.imports import symbol_by_name

from distpool import cli
from distpool.config import resolve
from distpool.errors import SecretKeyMissingError
from distpool.worker import node
from distpool.worker.app import create_app
from distpool.worker.slots import child
from distpool.worker.slots.parent import GIVE_UP_FAILURES, _Slot, _tend, _tend_all, slot_name
from distpool.worker.slots.restarts import Backoff
from distpool.worker.slots.state import Running, SlotState


class StandInProcess:
    pids = iter(range(1000, 100000))

    def __init__(self, exitcode=None):
        self.exitcode = exitcode
        self.pid = next(self.pids)
        self.events = []

    def is_alive(self):
        return self.exitcode is None

    def kill(self):
        self.events.append("kill")
        self.exitcode = -9

    def join(self, timeout=None):
        pass


class StandInRecovery:
    def __init__(self, process=None):
        self.process = process
        self.events = []

    def timed_out(self, running):
        self.events.append(("timed_out", running.message_id))
        if self.process is not None:
            self.process.events.append(("timed_out", running.message_id))

    def requeue(self, running):
        self.events.append(("requeue", running.message_id))
        if self.process is not None:
            self.process.events.append(("requeue", running.message_id))

    def release(self, holder):
        self.events.append(("release", holder))
        if self.process is not None:
            self.process.events.append(("release", holder))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def slot(tmp_path, process, running=None, index=0, clock=None):
    state = SlotState(str(tmp_path / f"slot-{index}"), f"holder-{index}")
    if running is None:
        state.idle()
    else:
        state.running(running.message_id, running.delivery_tag, running.kill_at)
    tended = _Slot(index, state, Backoff(clock=clock or Clock()))
    tended.process = process
    tended.backoff.started()
    return tended


def test_a_busy_slot_within_its_time_limit_is_left_alone(tmp_path):
    process = StandInProcess()
    for kill_at in (None, time.time() + 60):
        tended = slot(tmp_path, process, Running("m1", "t1", kill_at))
        assert _tend(tended, StandInRecovery(process)) is None
    assert process.events == []


def test_a_slot_past_its_time_limit_is_marked_then_killed_then_requeued(tmp_path):
    # Marked before the kill: on AMQP the message is delivered again as soon as it dies.
    process = StandInProcess()
    tended = slot(tmp_path, process, Running("m1", "t1", time.time() - 1))
    assert _tend(tended, StandInRecovery(process)) == 0
    assert process.events == [("timed_out", "m1"), "kill", ("release", "holder-0"),
                              ("requeue", "m1")]


def test_the_message_of_a_dead_slot_is_requeued_and_the_slot_replaced_at_once(tmp_path):
    process = StandInProcess(exitcode=-9)
    tended = slot(tmp_path, process, Running("m1", "t1", None))
    for _ in range(20):  # a task that keeps killing its process: bounded by its attempts
        assert _tend(tended, StandInRecovery(process)) == 0
    assert process.events == [("release", "holder-0"), ("requeue", "m1")] * 20
    assert tended.backoff.failures == 0


def test_a_slot_that_keeps_failing_while_idle_is_restarted_with_a_growing_delay(tmp_path):
    process = StandInProcess(exitcode=1)
    tended = slot(tmp_path, process)
    delays = [_tend(tended, StandInRecovery(process)) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert process.events == [("release", "holder-0")] * 8  # what it took while idle


def test_a_slot_that_ended_itself_cleanly_is_replaced_at_once_every_time(tmp_path):
    process = StandInProcess(exitcode=0)  # retired: maxtasksperchild, --max-tasks-per-child
    tended = slot(tmp_path, process)
    assert all(_tend(tended, StandInRecovery(process)) == 0 for _ in range(20))
    assert tended.backoff.failures == 0  # never a reason to give up


class Node:
    """Slots whose processes start as ``make()`` says, tended on a fake clock."""

    def __init__(self, tmp_path, makers):
        self.clock = Clock()
        self.makers = makers
        self.starts = [0] * len(makers)
        self.recovery = StandInRecovery()
        self.slots = [slot(tmp_path, make(), index=index, clock=self.clock)
                      for index, make in enumerate(makers)]

    def start(self, tended):
        self.starts[tended.index] += 1
        tended.process = self.makers[tended.index]()
        tended.backoff.started()

    def run(self, seconds, step=0.2):
        """Tend for ``seconds``; False once the node gives up."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now += step
            if not _tend_all(self.slots, self.recovery, self.start, self.clock.now):
                return False
        return True


def test_slots_killed_at_once_are_replaced_a_few_at_a_time(tmp_path):
    # terminate() kills every busy slot at once: each message goes back at the first look,
    # the replacements start STARTS_PER_LOOK per look, not all in one burst.
    node = Node(tmp_path, [StandInProcess] * 10)
    for index, tended in enumerate(node.slots):
        tended.state.running(f"m{index}", f"t{index}", None)
        tended.process.exitcode = 70
    starts = []
    for _ in range(4):
        assert _tend_all(node.slots, node.recovery, node.start, node.clock.now, starts=3)
        starts.append(sum(node.starts))
    requeued = [event for event in node.recovery.events if event[0] == "requeue"]
    assert requeued == [("requeue", f"m{index}") for index in range(10)]  # all at the first
    assert starts == [3, 6, 9, 10]
    assert all(tended.process.is_alive() for tended in node.slots)


def test_a_flapping_slot_backs_off_alone_and_the_node_serves_on(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="distpool")
    node = Node(tmp_path, [lambda: StandInProcess(exitcode=1), StandInProcess])
    healthy = node.slots[1].process
    assert node.run(3600)  # an hour: never gives up while a slot serves
    assert node.slots[1].process is healthy and node.starts[1] == 0
    # 1 + 2 + 4 + 8 + 16 + 32 s, then once a minute: not a restart every tick.
    assert 60 <= node.starts[0] <= 6 + 3600 / 60
    assert "slot 0 (pid" in caplog.text and "died while idle (exit code 1)" in caplog.text
    assert "restarting it in 60 s" in caplog.text


def test_a_slot_is_not_restarted_before_its_backoff_is_over(tmp_path):
    node = Node(tmp_path, [lambda: StandInProcess(exitcode=1), StandInProcess])
    node.run(0.2)  # the first failure: restarted 1 s later
    assert node.slots[0].process is None and node.starts[0] == 0
    node.run(0.6)
    assert node.starts[0] == 0
    node.run(0.4)
    assert node.starts[0] == 1


def test_the_node_gives_up_only_when_every_slot_keeps_failing(tmp_path, caplog):
    node = Node(tmp_path, [lambda: StandInProcess(exitcode=1)] * 2)
    started = node.clock.now
    assert not node.run(3600)
    assert all(s.backoff.failures == GIVE_UP_FAILURES for s in node.slots)
    assert node.clock.now - started >= 1 + 2 + 4 + 8 + 16
    assert "giving up: every slot has failed 6 times in a row" in caplog.text


def test_a_slot_that_stays_up_a_minute_starts_its_count_afresh(tmp_path):
    lives = iter([1] * 5 + [None] * 1000)  # fails five times, then comes up for good
    node = Node(tmp_path, [lambda: StandInProcess(exitcode=next(lives)),
                           lambda: StandInProcess(exitcode=1)])
    assert node.run(3600)
    assert node.slots[0].backoff.failures == 5 and node.slots[0].backoff.stable()
    node.slots[0].process.exitcode = -9  # then killed while idle
    node.run(0.2)
    assert node.slots[0].backoff.failures == 1


def settings(secret="k" * 32):
    return resolve(broker="redis://127.0.0.1:6379/0", secret=secret, environ={})


class Calls:
    """Stands in for the two process models: records how the node ran."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(node, "run_slots", self.record("slots"))
        monkeypatch.setattr(node, "run_worker", self.record("celery"))

    def record(self, model):
        def run(*args, **kwargs):
            self.calls.append((model, args, kwargs))
            return 0
        return run


@pytest.mark.parametrize("pool", [None, "solo"])
def test_a_node_runs_slots_by_default_and_for_solo(monkeypatch, pool):
    calls = Calls(monkeypatch)
    assert node.run(settings(), concurrency=3, name="n@h", loglevel="INFO",
                    extra_args=["-E"], pool=pool) == 0
    assert calls.calls == [("slots", (settings(), 3, "n@h", "INFO", ["-E"]), {})]


def test_a_node_runs_celery_s_own_worker_for_any_other_pool(monkeypatch):
    calls = Calls(monkeypatch)
    node.run(settings(), concurrency=2, name="n@h", extra_args=["-E"], pool="prefork")
    assert calls.calls == [
        ("celery", (settings(), 2, "n@h", "WARNING", ["--pool=prefork", "-E"]), {})]


def test_a_node_without_a_key_starts_nothing(monkeypatch):
    calls = Calls(monkeypatch)
    with pytest.raises(SecretKeyMissingError):
        node.run(settings(secret=None), concurrency=1)
    assert calls.calls == []


def test_a_node_is_named_after_its_process_by_default(monkeypatch):
    calls = Calls(monkeypatch)
    node.run(settings(), concurrency=1)
    (_, (_, _, name, _, _), _), = calls.calls
    assert name.startswith("distpool-") and name.endswith("@%h")


def test_distpool_worker_hands_its_options_to_the_node(monkeypatch):
    runs = []
    monkeypatch.setattr(node, "run", lambda settings, **kwargs: runs.append(kwargs) or 0)
    for name in ("DISTPOOL_SECRET", "DISTPOOL_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["worker", "--insecure", "-c", "3", "-n", "x@h", "-l", "info",
                     "-P", "prefork", "-E", "--max-tasks-per-child", "5"]) == 0
    assert cli.main(["worker", "--insecure", "-c", "1", "--pool=solo"]) == 0
    assert runs == [
        {"concurrency": 3, "name": "x@h", "loglevel": "INFO", "pool": "prefork",
         "extra_args": ["-E", "--max-tasks-per-child", "5"]},
        {"concurrency": 1, "name": None, "loglevel": "WARNING", "pool": "solo",
         "extra_args": []}]


def test_each_slot_is_a_celery_node_named_after_its_node():
    assert slot_name("distpool-12@%h", 0) == "distpool-12-0@%h"
    assert slot_name("worker@box.example", 3) == "worker-3@box.example"
    assert slot_name("plain", 1) == "plain-1@%h"


def test_what_a_spawned_slot_is_given_pickles():
    # On Windows and macOS a slot is a fresh interpreter: target and arguments are pickled.
    assert pickle.loads(pickle.dumps(settings())) == settings()
    assert pickle.loads(pickle.dumps(child.run_slot)) is child.run_slot


def test_a_slot_s_app_runs_its_pool_and_raises_the_soft_limit_itself(monkeypatch, tmp_path):
    reported = []
    monkeypatch.setattr(child, "report_to_parent", reported.append)
    app = create_app(settings())
    assert app.distpool_raises_soft_limit is False  # prefork raises it
    state = SlotState(str(tmp_path / "slot-0"), "holder")
    child.configure_slot(app, state)
    assert symbol_by_name(app.conf.worker_pool) is child.SlotPool
    assert app.distpool_raises_soft_limit is True and reported == [state]
