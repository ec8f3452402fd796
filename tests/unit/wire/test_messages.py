"""How a task message describes its tasks to operators (Celery's argsrepr), and names them."""

from __future__ import annotations

from distpool.wire.envelope import TaskEnvelope
from distpool.wire.messages import describe
from distpool.wire.payload import BlobRef, Payload

POOL = "3f2a9c1e" + "0" * 24


def envelope(task: str, arguments: Payload | BlobRef) -> TaskEnvelope:
    return TaskEnvelope(pool_id=POOL, task_id=f"{POOL}:{task}", kind="map",
                        function=Payload.of_bytes(b"f"), arguments=arguments,
                        label="forecast.simulate")


def test_one_task_is_described_by_its_pool_its_name_and_its_arguments_size():
    assert describe([envelope("7:0", Payload.of_bytes(b"x" * 2150))]) == (
        "pool 3f2a9c1e: task 7:0, arguments 2,150 bytes (2.1 KiB)")


def test_a_message_of_several_tasks_names_the_first_and_last_and_counts_them():
    message = [envelope("7:0", Payload.of_bytes(b"x" * 100)),
               envelope("7:1", BlobRef("ab" * 32, 3 * 2**20)),
               envelope("8:0", Payload.of_bytes(b"x" * 12))]
    assert describe(message) == (
        "pool 3f2a9c1e: tasks 7:0 to 8:0 (3), arguments 3,145,840 bytes (3.0 MiB)")
