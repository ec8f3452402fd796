"""A task inside the client, and its name on the wire.

Inside the client a task is ``(job, index)``: the pool's ``job``-th call, and the ``index``-th
chunk of it (0 for ``apply``). The envelope that carries it is named ``<pool>:<job>:<index>``
(workers read the pool id from that prefix of the message id), and :class:`TaskMaker` is the
one place that name is made. Nothing in the client parses it back: the engine keeps the
:class:`Task` it sent under that name, which is what result records come back with.
"""

from __future__ import annotations

from ..wire.envelope import TaskEnvelope
from ..wire.payload import Payload


class Task:
    """Chunk ``index`` of job ``job``, and the envelope that carries it to the workers (once
    staged, without its large payloads: see ``Backend.stage``)."""

    __slots__ = ("job", "index", "envelope")

    def __init__(self, job: int, index: int, envelope: TaskEnvelope) -> None:
        self.job = job
        self.index = index
        self.envelope = envelope

    def __repr__(self) -> str:
        return f"<Task {self.job}:{self.index}>"


class TaskMaker:
    """Makes one pool's tasks: what every envelope of the pool carries, and their names."""

    def __init__(self, pool_id: str, initializer: Payload | None,
                 max_tasks: int | None) -> None:
        self._pool_id = pool_id
        self._initializer = initializer
        self._max_tasks = max_tasks

    def wire_id(self, job: int, index: int) -> str:
        """The name of task ``(job, index)`` on the wire."""
        return f"{self._pool_id}:{job}:{index}"

    def task(self, job: int, index: int, kind: str, function: Payload,
             arguments: Payload) -> Task:
        """Task ``(job, index)``: ``function`` applied to ``arguments`` as ``kind`` says."""
        return Task(job, index, TaskEnvelope(
            pool_id=self._pool_id,
            task_id=self.wire_id(job, index),
            kind=kind,
            function=function,
            arguments=arguments,
            initializer=self._initializer,
            max_tasks=self._max_tasks,
        ))
