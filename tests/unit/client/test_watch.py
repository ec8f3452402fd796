"""The client's watch on its messages in flight (distpool.watch), on a clock of its own."""

from __future__ import annotations

from distpool.client.watch import DONE, MAX_RESEND_INTERVAL, MessageWatch
from distpool.wire.envelope import TaskEnvelope


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def message(task_id: str) -> list[TaskEnvelope]:
    return [TaskEnvelope("pool", task_id, "apply", b"f", b"a")]


def watching(*message_ids: str) -> tuple[Clock, MessageWatch, list[list[TaskEnvelope]]]:
    """A watch on its own clock, with a message of each id sent: (clock, watch, messages)."""
    clock = Clock()
    watch = MessageWatch(resend_after=10, no_worker_timeout=60, clock=clock)
    sent = [message(message_id) for message_id in message_ids]
    for message_id, envelopes in zip(message_ids, sent):
        watch.sent(message_id, envelopes)
    return clock, watch, sent


def test_a_message_nobody_claims_is_sent_again_ever_less_often():
    clock, watch, [sent] = watching("pool:0:0")
    assert watch.due() == []
    resent_at = []
    for _ in range(2000):
        clock.now += 1
        for message_id in watch.due():
            if watch.judge({message_id: None}, workers=2).resend == [sent]:
                resent_at.append(clock.now - 1000)
    assert resent_at[:4] == [10, 30, 70, 150]  # 10 s, then twice the wait each time
    gaps = [b - a for a, b in zip(resent_at, resent_at[1:])]
    assert max(gaps) <= MAX_RESEND_INTERVAL


def test_a_message_whose_claim_moves_is_left_alone():
    clock, watch, _ = watching("pool:0:0")
    for renewal in range(20):
        clock.now += 10
        verdict = watch.judge({"pool:0:0": f"{renewal} host:1:a"}, workers=2)
        assert verdict.resend == [] and verdict.fail == []


def test_a_claim_that_stops_moving_makes_the_message_an_orphan_again():
    clock, watch, [sent] = watching("pool:0:0")
    clock.now += 10
    assert watch.judge({"pool:0:0": "1 host:1:a"}, workers=2).resend == []
    clock.now += 5
    assert watch.judge({"pool:0:0": "1 host:1:a"}, workers=2).resend == []
    clock.now += 5  # unmoved for 10 s: its holder died after a copy was dropped for it
    assert watch.judge({"pool:0:0": "1 host:1:a"}, workers=2).resend == [sent]


def test_a_done_or_finished_message_is_never_due():
    clock, watch, _ = watching("pool:0:0", "pool:0:1")
    clock.now += 10
    watch.judge({"pool:0:0": DONE}, workers=2)
    watch.finished("pool:0:1")
    clock.now += 100
    assert watch.due() == []


def test_orphans_fail_once_no_worker_has_been_registered_for_the_timeout():
    clock, watch, [sent] = watching("pool:0:0")
    clock.now += 10
    assert watch.judge({"pool:0:0": None}, workers=0).fail == []
    clock.now += 30
    assert watch.judge({"pool:0:0": None}, workers=1).fail == []  # one came back
    clock.now += 10
    assert watch.judge({"pool:0:0": None}, workers=0).fail == []  # the clock starts again
    clock.now += 59
    assert watch.judge({"pool:0:0": None}, workers=0).fail == []
    clock.now += 1
    assert watch.judge({"pool:0:0": None}, workers=0).fail == [sent]
