"""A message as the broker carries it: one Celery task message of distpool's one task, whose
arguments are the signed envelopes of one or more tasks (:mod:`.envelope`).

:meth:`TaskMessage.of` makes one from staged envelopes: it signs them, names the message by
its first task, gives it the time limits of the pool's ``task_timeout`` (the soft one raises
in the task, the hard one kills its process), and says what operators see of it in place of
its arguments, which are long and of no use to a person (Celery's ``argsrepr``, and its
``shadow`` name: the user's function, not distpool's task). Publishers send it
(:mod:`distpool.brokers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .envelope import TaskEnvelope
from .payload import BlobRef, describe_size
from .signing import Signer

#: A task past its soft time limit (the pool's task_timeout) gets this long to stop before
#: its process is killed.
TIME_LIMIT_GRACE = 5.0


class TaskMessage(NamedTuple):
    """One Celery task message of distpool's task: its id, its positional arguments (the
    task envelopes, as JSON objects), how the workers' logs, ``celery inspect`` and Flower
    show them (``argsrepr`` and the ``shadow`` name), and its time limits (seconds)."""

    task_id: str
    args: Sequence[Any]
    argsrepr: str
    soft_time_limit: float | None
    time_limit: float | None
    shadow: str | None = None

    @classmethod
    def of(cls, envelopes: Sequence[TaskEnvelope], signer: Signer,
           task_timeout: float | None) -> TaskMessage:
        """The message carrying ``envelopes`` (staged: large payloads as blob references),
        signed by ``signer``; each task may run ``task_timeout`` seconds (None: any time)."""
        soft = None if task_timeout is None else task_timeout * len(envelopes)
        return cls(envelopes[0].task_id, [envelope.to_wire(signer) for envelope in envelopes],
                   describe(envelopes), soft, None if soft is None else soft + TIME_LIMIT_GRACE,
                   shadow=envelopes[0].label)


def describe(envelopes: Sequence[TaskEnvelope]) -> str:
    """A message's tasks as operators see them in place of its arguments (Celery's
    ``argsrepr``): its pool, its tasks (``job:chunk``) and the size of their arguments."""
    pool_id = envelopes[0].pool_id
    first, last = (e.task_id[len(pool_id) + 1:] for e in (envelopes[0], envelopes[-1]))
    tasks = (f"task {first}" if len(envelopes) == 1
             else f"tasks {first} to {last} ({len(envelopes)})")
    size = sum(envelope.arguments.size if isinstance(envelope.arguments, BlobRef)
               else envelope.arguments.nbytes for envelope in envelopes)
    return f"pool {pool_id[:8]}: {tasks}, arguments {describe_size(size)}"
