"""The slot parent's decisions (distpool.slots), over stand-in processes and broker."""

from __future__ import annotations

import time

from distpool.slot_state import Running, SlotState
from distpool.slots import _Outcome, _Slot, _tend


class StandInProcess:
    def __init__(self, exitcode=None):
        self.exitcode = exitcode
        self.events = []

    def is_alive(self):
        return self.exitcode is None

    def kill(self):
        self.events.append("kill")
        self.exitcode = -9

    def join(self, timeout=None):
        pass


class StandInRecovery:
    def __init__(self, process):
        self.process = process

    def timed_out(self, running):
        self.process.events.append(("timed_out", running.message_id))

    def requeue(self, running):
        self.process.events.append(("requeue", running.message_id))


def slot(tmp_path, process, running=None):
    state = SlotState(str(tmp_path / "slot"))
    if running is None:
        state.idle()
    else:
        state.running(running.message_id, running.delivery_tag, running.kill_at)
    return _Slot(0, state, process)


def test_a_busy_slot_within_its_time_limit_is_left_alone(tmp_path):
    process = StandInProcess()
    for kill_at in (None, time.time() + 60):
        tended = slot(tmp_path, process, Running("m1", "t1", kill_at))
        assert _tend(tended, StandInRecovery(process)) is _Outcome.KEEP
    assert process.events == []


def test_a_slot_past_its_time_limit_is_marked_then_killed_then_requeued(tmp_path):
    # Marked before the kill: on AMQP the message is delivered again as soon as it dies.
    process = StandInProcess()
    tended = slot(tmp_path, process, Running("m1", "t1", time.time() - 1))
    assert _tend(tended, StandInRecovery(process)) is _Outcome.REPLACE
    assert process.events == [("timed_out", "m1"), "kill", ("requeue", "m1")]


def test_the_message_of_a_dead_slot_is_requeued_without_using_the_restart_budget(tmp_path):
    process = StandInProcess(exitcode=-9)
    tended = slot(tmp_path, process, Running("m1", "t1", None))
    for _ in range(20):  # a task that keeps killing its process: bounded by its attempts
        assert _tend(tended, StandInRecovery(process)) is _Outcome.REPLACE
    assert process.events == [("requeue", "m1")] * 20


def test_a_slot_that_keeps_exiting_while_idle_is_given_up_on(tmp_path):
    process = StandInProcess(exitcode=1)
    tended = slot(tmp_path, process)
    outcomes = [_tend(tended, StandInRecovery(process)) for _ in range(6)]
    assert outcomes == [_Outcome.REPLACE] * 5 + [_Outcome.GIVE_UP]
    assert process.events == []


def test_a_slot_that_ended_itself_cleanly_is_replaced_every_time(tmp_path):
    process = StandInProcess(exitcode=0)  # --max-tasks-per-child
    tended = slot(tmp_path, process)
    assert all(_tend(tended, StandInRecovery(process)) is _Outcome.REPLACE for _ in range(20))
