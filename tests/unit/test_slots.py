"""The slot parent's decisions (distpool.slots), over stand-in processes and broker, on a
fake clock."""

from __future__ import annotations

import logging
import time

from distpool.worker.slots.parent import GIVE_UP_FAILURES, _Slot, _tend, _tend_all
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
    process = StandInProcess(exitcode=0)  # --max-tasks-per-child
    tended = slot(tmp_path, process)
    assert all(_tend(tended, StandInRecovery(process)) == 0 for _ in range(20))


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
