"""The slot parent's decisions (distpool.worker.slots.parent), over stand-in processes and
broker, on a fake clock; and how a slot starts (distpool.worker.slots.child), without
starting one."""

from __future__ import annotations

import logging
import pickle
import threading
import time

from celery.utils.imports import symbol_by_name

from distpool.config import resolve
from distpool.worker.app import create_app
from distpool.worker.slots import child
from distpool.worker.slots.parent import (
    GIVE_UP_FAILURES,
    _end_orphans,
    _Slot,
    _stop_all,
    _tend,
    _tend_all,
    slot_name,
)
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


class WarmProcess(StandInProcess):
    """Ends its running task and exits when the node's stop is set (or never, if slow)."""

    def __init__(self, stopping, slow=False):
        super().__init__()
        self.stopping, self.slow = stopping, slow

    def join(self, timeout=None):
        if self.stopping.is_set() and not self.slow:
            self.exitcode = 0


class StandInRecovery:
    def __init__(self, process=None, gone=()):
        self.process = process
        self.events = []
        self.gone = set(gone)

    def pools_gone(self, pool_ids):
        self.events.append(("pools_gone", sorted(pool_ids)))
        return self.gone & set(pool_ids)

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


def test_a_stopped_node_lets_running_tasks_finish_and_kills_only_the_late(tmp_path, caplog):
    stopping = threading.Event()
    prompt, late = WarmProcess(stopping), WarmProcess(stopping, slow=True)
    slots = [slot(tmp_path, prompt, Running("m0", "t0", None), index=0),
             slot(tmp_path, late, Running("m1", "t1", None), index=1)]
    recovery = StandInRecovery()
    _stop_all(slots, recovery, stopping, timeout=0.1)
    assert stopping.is_set()
    assert prompt.exitcode == 0 and prompt.events == []
    assert late.events == ["kill"]
    assert recovery.events == [("release", "holder-1"), ("requeue", "m1")]
    assert "slot 1 (pid" in caplog.text and "still running message m1" in caplog.text


def test_a_slot_still_running_a_task_of_an_ended_pool_is_killed_at_the_second_look(tmp_path):
    ended, live = "a" * 32, "b" * 32
    orphan, other = StandInProcess(), StandInProcess()
    slots = [slot(tmp_path, orphan, Running(f"{ended}:0", "t0", None), index=0),
             slot(tmp_path, other, Running(f"{live}:0", "t1", None), index=1)]
    for tended in slots:
        tended.running = tended.state.read()
    recovery = StandInRecovery(gone={ended})
    _end_orphans(slots, recovery)  # first sighting: the slot's own watchdog may stop it
    assert orphan.events == [] and recovery.events == [("pools_gone", [ended, live])]
    _end_orphans(slots, recovery)
    assert orphan.events == ["kill"] and other.events == []
    # The next look finds it dead running the message: put back (and skipped), replaced.
    assert _tend(slots[0], recovery) == 0
    assert recovery.events[-1] == ("requeue", f"{ended}:0")


def test_a_slot_that_moved_on_to_another_message_is_not_killed(tmp_path):
    ended = "a" * 32
    process = StandInProcess()
    tended = slot(tmp_path, process, Running(f"{ended}:0", "t0", None))
    tended.running = tended.state.read()
    recovery = StandInRecovery(gone={ended})
    _end_orphans([tended], recovery)
    tended.running = Running(f"{ended}:1", "t1", None)  # the revoke's next one, skipped soon
    _end_orphans([tended], recovery)
    assert process.events == []
    _end_orphans([slot(tmp_path, StandInProcess(), index=1)], recovery)  # idle: nothing asked
    assert recovery.events == [("pools_gone", [ended])] * 2
