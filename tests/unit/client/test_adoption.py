"""A rerun's take-over of what its dead client sent (distpool.client.adoption), without a
store: the records and states it would read are made here."""

from __future__ import annotations

from typing import Any

from distpool.client.adoption import AdoptedJob, Handover, SentTask
from distpool.wire import serialization
from distpool.wire.envelope import MESSAGE_DONE, ResultRecord, TaskEnvelope
from distpool.wire.payload import Payload
from distpool.wire.signing import Signer

KEY = Signer(b"the cluster's key")
POOL = "f" * 32


def envelope(job: int, chunk: int) -> TaskEnvelope:
    return TaskEnvelope(pool_id=POOL, task_id=f"{POOL}:{job}:{chunk}", kind="map",
                        function=Payload.of_bytes(b"code"),
                        arguments=Payload.of_bytes(b"arguments"))


def sent(handover: Handover, job: int, chunk: int, call: int, positions: list[int]) -> SentTask:
    task = SentTask(job, chunk, call, positions, [b"d%d" % p for p in positions])
    handover.read(Handover.sent_record(f"{POOL}:{job}:{chunk}", [task],
                                       [envelope(job, chunk).to_wire(KEY)]))
    return task


def result(job: int, chunk: int, values: list[Any], ok: bool = True) -> bytes:
    payload = serialization.dumps(values)
    return ResultRecord(f"{POOL}:{job}:{chunk}", ok, payload).to_bytes(KEY, POOL)


class Recorded:
    def __init__(self) -> None:
        self.records: list[tuple[int, list[int], list[bytes], list[Any]]] = []

    def __call__(self, call: int, positions: list[int], digests: list[bytes],
                 values: list[Any]) -> None:
        self.records.append((call, positions, digests, values))


class Target:
    quiet = False
    remote_traceback = RuntimeError

    def __init__(self) -> None:
        self.outcomes: dict[int, tuple[bool, Any]] = {}

    def set_outcome(self, index: int, success: bool, value: Any) -> None:
        assert index not in self.outcomes
        self.outcomes[index] = (success, value)

    def input_failed(self, sent: int, exc: BaseException) -> None:
        raise AssertionError

    def abort(self, exc: BaseException) -> None:
        raise AssertionError


def take_over(handover: Handover, states: dict[str, str | None], left: list[bytes],
              recorded: Recorded) -> tuple[list[Any], dict[int, list[SentTask]]]:
    return handover.take_over(POOL, states, left, KEY, lambda record: record.payload,
                              recorded, lambda call: f"forecast.simulate#{call}")


def test_the_journal_names_the_pool_and_the_jobs_a_rerun_must_not_reuse():
    handover = Handover()
    handover.read(("pool", POOL))
    sent(handover, 3, 0, 1, [0, 1])
    sent(handover, 1, 4, 0, [8])
    assert handover.pool_id == POOL and handover.next_job == 4


def test_messages_whose_items_the_journal_holds_are_not_taken_over():
    handover = Handover()
    answered, unanswered = sent(handover, 0, 0, 0, [0, 1]), sent(handover, 0, 1, 0, [2, 3])
    assert handover.unanswered(lambda task: task == answered) == [f"{POOL}:0:1"]
    messages, jobs = take_over(handover, {f"{POOL}:0:1": None}, [], Recorded())
    assert [[task.envelope.task_id for task in tasks] for tasks in messages] == [[f"{POOL}:0:1"]]
    assert jobs == {0: [unanswered]}


def test_records_the_dead_client_left_are_journaled_and_their_messages_not_kept():
    handover = Handover()
    sent(handover, 0, 0, 0, [0, 1])
    sent(handover, 0, 1, 0, [2, 3])
    ids = handover.unanswered(lambda task: False)
    recorded = Recorded()
    left = [result(0, 0, [0, 1]), result(0, 1, ["boom"], ok=False), b"hostile bytes",
            result(9, 9, [81])]  # (a task no journal names)
    messages, jobs = take_over(handover, dict.fromkeys(ids, MESSAGE_DONE), left, recorded)
    assert messages == [] and jobs == {}
    # The failure is not journaled: computed again, as any journal's failures.
    assert recorded.records == [(0, [0, 1], [b"d0", b"d1"], [0, 1])]


def test_a_message_done_whose_record_is_gone_is_computed_again():
    handover = Handover()
    sent(handover, 0, 0, 0, [5])
    ids = handover.unanswered(lambda task: False)
    messages, jobs = take_over(handover, {ids[0]: MESSAGE_DONE}, [], Recorded())
    assert messages == [] and not handover.wait_for(0, 5, b"d5", Target(), False)


def test_a_running_message_is_kept_in_flight_and_its_items_wait_for_it():
    handover = Handover()
    task = sent(handover, 2, 7, 1, [14, 15])
    ids = handover.unanswered(lambda task: False)
    messages, jobs = take_over(handover, {ids[0]: "1796654306671 vm:25753:92470ad7"}, [],
                               Recorded())
    [[kept]] = messages
    assert (kept.job, kept.index) == (2, 7)
    assert kept.envelope.task_id == f"{POOL}:2:7" and kept.envelope.label == "forecast.simulate#1"
    assert kept.envelope.function == envelope(2, 7).function
    assert jobs == {2: [task]}
    waiting = Target()
    assert not handover.wait_for(1, 14, b"other arguments", waiting, False)  # changed input
    assert handover.wait_for(1, 15, b"d15", waiting, False)
    assert [(offset, waiter.target) for offset, waiter in handover.arrived(task)] == [
        (1, waiting)]
    assert not handover.wait_for(1, 15, b"d15", waiting, False)  # (came: the journal has it)


def test_an_adopted_job_hands_each_chunk_on_and_is_done_once_all_came():
    first, second = SentTask(4, 0, 0, [0], [b"a"]), SentTask(4, 1, 0, [1], [b"b"])
    landed: list[tuple[SentTask, bool, Any]] = []
    done: list[int] = []
    job = AdoptedJob(4, [first, second], lambda *outcome: landed.append(outcome), done.append)
    job.set_outcome(1, True, [1])
    assert landed == [(second, True, [1])] and done == []
    error = RuntimeError("terminated")
    job.abort(error)
    assert landed[1] == (first, False, error) and done == [4]
