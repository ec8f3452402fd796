"""distpool's exceptions, and the multiprocessing ones it raises unchanged.

Code written for ``multiprocessing.Pool`` catches ``multiprocessing.TimeoutError`` and
inspects ``multiprocessing.pool.RemoteTraceback``; distpool raises those very classes.
"""

from __future__ import annotations

from multiprocessing import TimeoutError

# Not in typeshed's stubs, but public in multiprocessing.pool since Python 3.4.
from multiprocessing.pool import (  # type: ignore[attr-defined]
    MaybeEncodingError,
    RemoteTraceback,
)

__all__ = [
    "AuthenticationError",
    "BrokerUnavailableError",
    "DistpoolError",
    "EnvelopeError",
    "IncompatibleEnvelopeError",
    "MaybeEncodingError",
    "ModuleConflictError",
    "PayloadTooLargeError",
    "PoolTerminatedError",
    "RemoteTraceback",
    "SecretKeyMissingError",
    "TaskTimeoutError",
    "TimeoutError",
    "UnsupportedRedisError",
    "VersionMismatchError",
    "VersionSkewWarning",
    "WorkerLostError",
    "add_note",
]


class DistpoolError(Exception):
    """Base class of the errors distpool itself raises."""


class EnvelopeError(DistpoolError):
    """A message that is not a valid distpool task or result; it is never unpickled.

    ``pool_id`` and ``task_id`` name the task when the message did, so that its caller can
    be told; they come from an unauthenticated message and serve only to address that.
    """

    def __init__(self, message: str, pool_id: str | None = None,
                 task_id: str | None = None) -> None:
        super().__init__(message)
        self.pool_id = pool_id
        self.task_id = task_id

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (str(self), self.pool_id, self.task_id))


class IncompatibleEnvelopeError(EnvelopeError):
    """A well-formed message from another Python, dill or envelope version."""


class AuthenticationError(EnvelopeError):
    """A message not signed with this key (or expired): a pool's key and its workers' differ,
    or someone other than a key holder wrote to the broker or the result store."""


class PoolTerminatedError(DistpoolError):
    """The pool was terminated before this result arrived."""


class PayloadTooLargeError(DistpoolError):
    """A task's arguments, function or result do not fit where they must travel: the
    message says how large it is and what limit it met."""


class BrokerUnavailableError(DistpoolError):
    """The broker or the result store cannot be reached."""


class UnsupportedRedisError(DistpoolError):
    """A Redis too old for distpool (it needs 6.2 or newer): the broker's, the result
    store's, or the local cluster's. The message names the server, the version it reports
    and the version needed."""


class SecretKeyMissingError(DistpoolError):
    """A real broker and no secret key, and ``insecure`` was not asked for."""


class WorkerLostError(DistpoolError):
    """The worker process running the task died, again and again: the task was given up."""


class TaskTimeoutError(DistpoolError):
    """The task ran past the pool's ``task_timeout`` and its worker process was killed."""


class ModuleConflictError(DistpoolError):
    """A task needs a version of the user's module that its worker process cannot load: the
    process imported another already. ``replaceable``: a fresh process would not have."""

    def __init__(self, message: str, replaceable: bool = False) -> None:
        super().__init__(message)
        self.replaceable = replaceable

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (str(self), self.replaceable))


class VersionMismatchError(DistpoolError):
    """With ``strict_versions``: a worker's installed modules that the task relies on are
    not of the client's versions, so it did not run the task (the message names them)."""


class CheckpointError(DistpoolError):
    """A named run cannot go on from its journal: the script makes another call than the
    journaled run made at that place (the message names both), or another process holds the
    run (the message names its host and pid)."""


class VersionSkewWarning(UserWarning):
    """A worker's installed modules that a task relied on are not of the client's versions
    (the message names the module, both versions and the host); the task ran all the same."""


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` where Python has it (3.11+), the same attribute before.

    distpool re-raises the user's own exception types (code written for multiprocessing
    catches them) and adds what it knows, such as which argument failed, as a note.
    """
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python < 3.11
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
