"""Runs tasks: the only place where user code is executed.

Every backend (Celery workers, and the in-process eager one) hands an authenticated
:class:`TaskEnvelope` to :func:`execute` and gets back a :class:`ResultRecord`, whatever
happened: user exceptions, unpicklable results and a failing initializer all become failure
records. The backend signs the record and sends it.

"User exceptions" means any ``BaseException``, as in ``concurrent.futures.ProcessPoolExecutor``
(whose worker hands ``SystemExit`` and ``KeyboardInterrupt`` back to the caller), not only
``Exception``, as in ``multiprocessing.Pool`` (whose worker process then ends and whose caller
waits for ever). Nothing of the worker's own arrives here as one: the slot model runs tasks
in a thread, which signals do not reach; its soft time limit, like prefork's, is
``SoftTimeLimitExceeded``, an ``Exception``; hard kills are ``os._exit`` or SIGKILL. All but
prefork's SIGTERM handler: see :func:`_process_is_ending`.

Each worker process keeps, per pool, a namespace module that stands in for the client's
``__main__`` (see :mod:`distpool.wire.serialization`). The pool's initializer runs in it before
the process's first task of that pool, so the globals it sets are seen by the tasks after it.
It keeps the pool's callables too, loaded once, by the hash of their payload: a callable that
travels as a blob (with a large global, say) is fetched once per process, not once per task.
Blobs are fetched through the ``fetch`` the backend gives, which checks them against their
signed reference.

Before anything of the task is loaded, the bundles of the user's own modules it needs go
first on the import path (:mod:`.bundles`), and the versions of the installed modules it
relies on are compared with the client's (:mod:`distpool.wire.versions`): a difference is a
warning in the result record, told once per pool and process, or with ``strict_versions``
the task's failure, without running it.

``maxtasksperchild`` counts tasks (a chunk of a map is one), as multiprocessing does. Once a
process has begun that many of a pool, :func:`spent` says so: a slot ends after its message
and its parent starts a fresh process. Where the process lives on (Celery's prefork and
threads pools, the eager backend), the pool's state in it starts afresh instead.
"""

from __future__ import annotations

import sys
import time
import traceback
import types
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Callable

from ..errors import EnvelopeError, MaybeEncodingError, VersionMismatchError
from ..wire import serialization, versions
from ..wire.envelope import Data, ResultRecord, TaskEnvelope
from ..wire.payload import BlobRef, Payload, ReadBlob
from . import bundles

#: How many pools' namespaces one worker process keeps; the least recently used goes first.
MAX_NAMESPACES = 16
#: Deserialised callables kept per pool.
MAX_CALLABLES = 32


class _PoolState:
    """What one worker process holds for one pool."""

    def __init__(self) -> None:
        self.namespace = serialization.new_namespace()
        self.tasks_run = 0
        self.warned: set[str] = set()  # version differences told to the client
        # Keyed by an inline payload's bytes, or a blob's hash.
        self.callables: OrderedDict[bytes | str, Callable[..., Any]] = OrderedDict()


_pools: OrderedDict[str, _PoolState] = OrderedDict()
#: Set once a pool's ``maxtasksperchild`` has run out in this process (see :func:`spent`).
_spent = False


def execute(envelope: TaskEnvelope, fetch: ReadBlob | None = None) -> ResultRecord:
    """Run one task and return its result record, never raising for the task's own faults
    (a blob that cannot be fetched is one of them)."""
    fetch = fetch or _no_blobs
    differences: list[str] = []
    try:
        if envelope.versions:
            differences = versions.differences(envelope.versions)
            if differences and envelope.strict_versions:
                raise VersionMismatchError(
                    "not run (strict_versions): " + "; ".join(differences))
        if envelope.bundles:
            bundles.mount(envelope.bundle_refs(), fetch)
        state = _state_for(envelope, fetch)
        if differences:
            news = [text for text in differences if text not in state.warned]
            state.warned.update(news)
            differences = news
        _count(state, envelope.max_tasks)
        function = _callable(state, envelope.function, fetch)
        arguments = serialization.loads(_payload(envelope.arguments, fetch),
                                        namespace=state.namespace)
        started = time.perf_counter()
        value = _run(envelope.kind, function, arguments)
        elapsed = time.perf_counter() - started
        try:
            payload = serialization.dumps(value, namespace=state.namespace)
        except BaseException as exc:  # a __reduce__ of the user's may raise anything
            if _process_is_ending():
                raise
            # As multiprocessing does: the task failed because its result cannot travel.
            return failure_record(envelope.task_id, MaybeEncodingError(exc, value),
                                  warnings=differences)
    except BaseException as exc:
        if _process_is_ending():
            raise
        return failure_record(envelope.task_id, exc, namespace=_namespace_of(envelope.pool_id),
                              warnings=differences)
    return ResultRecord(envelope.task_id, True, payload, elapsed, warnings=tuple(differences))


def _process_is_ending() -> bool:
    """Whether this process is being ended by a signal handler that raises ``SystemExit``:
    Celery's prefork pool processes get one from billiard, for the SIGTERM sent at a task's
    hard time limit or a cold shutdown. That exit belongs to the worker, not to the task, so
    it must go on rather than become the task's result; billiard tells the two apart by the
    same flag. Looked up, not imported: only the backends import Celery and its parts."""
    common = sys.modules.get("billiard.common")
    if common is None:
        return False
    fired = getattr(common, "terminate_handler_fired", None)
    if callable(fired):
        return bool(fired())
    flag = getattr(common, "_should_have_exited", None)  # older billiard: the same flag
    return bool(flag and flag[0])


def failure_record(task_id: str, exc: BaseException,
                   namespace: types.ModuleType | None = None,
                   warnings: Sequence[str] = ()) -> ResultRecord:
    """A failure record carrying ``exc`` and its formatted traceback for the client, with
    ``warnings`` for its user (see :class:`ResultRecord`)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    # The client sets RemoteTraceback(text) as the exception's __cause__, as multiprocessing.
    remote_traceback = f'\n"""\n{text}"""'
    try:
        payload = serialization.dumps((exc, remote_traceback), namespace=namespace)
    except BaseException as encoding_error:  # the exception's own __reduce__ may raise anything
        if _process_is_ending():
            raise
        substitute = MaybeEncodingError(encoding_error, repr(exc))
        payload = serialization.dumps((substitute, remote_traceback))
    return ResultRecord(task_id, False, payload, warnings=tuple(warnings))


def _run(kind: str, function: Callable[..., Any], arguments: Any) -> Any:
    if kind == "apply":
        args, kwds = arguments
        return function(*args, **kwds)
    if kind == "map":
        return [function(item) for item in arguments]
    return [function(*item) for item in arguments]  # starmap


def spent() -> bool:
    """Whether this process has begun ``maxtasksperchild`` tasks of some pool: a slot then
    ends once its message is done, and its parent starts a fresh process in its place
    (:class:`distpool.worker.slots.child.SlotPool`)."""
    return _spent


def retire() -> None:
    """Have this process end after its current message, as :func:`spent` then says: it
    cannot run a task that a fresh process can (see :mod:`.bundles`)."""
    global _spent
    _spent = True


def _count(state: _PoolState, max_tasks: int | None) -> None:
    """Count a task begun, whatever its outcome: multiprocessing counts every task its
    worker takes, failed ones included."""
    global _spent
    state.tasks_run += 1
    if max_tasks is not None and state.tasks_run >= max_tasks:
        _spent = True


def _state_for(envelope: TaskEnvelope, fetch: ReadBlob) -> _PoolState:
    state = _pools.get(envelope.pool_id)
    # maxtasksperchild where the process lives on past it (Celery's prefork or threads
    # pool, the eager backend, tasks of one message past the limit): the pool's state in
    # this process starts afresh, the initializer included.
    max_tasks = envelope.max_tasks
    if state is not None and max_tasks is not None and state.tasks_run >= max_tasks:
        state = None
    if state is None:
        state = _PoolState()
        if envelope.initializer is not None:
            initializer, initargs = serialization.loads(
                _payload(envelope.initializer, fetch), namespace=state.namespace)
            initializer(*initargs)
        # Registered only once initialised: a failing initializer is retried by the next task.
        _pools[envelope.pool_id] = state
        while len(_pools) > MAX_NAMESPACES:
            _pools.popitem(last=False)
    _pools.move_to_end(envelope.pool_id)
    return state


def _namespace_of(pool_id: str) -> types.ModuleType | None:
    state = _pools.get(pool_id)
    return None if state is None else state.namespace


def _callable(state: _PoolState, data: Data, fetch: ReadBlob) -> Callable[..., Any]:
    key = data.digest if isinstance(data, BlobRef) else data.to_bytes()
    function = state.callables.get(key)
    if function is None:
        function = serialization.loads(_payload(data, fetch), namespace=state.namespace)
        state.callables[key] = function
        while len(state.callables) > MAX_CALLABLES:
            state.callables.popitem(last=False)
    else:
        state.callables.move_to_end(key)
    return function


def _payload(data: Data, fetch: ReadBlob) -> Payload:
    return fetch(data) if isinstance(data, BlobRef) else data


def _no_blobs(ref: BlobRef) -> Payload:
    raise EnvelopeError(f"blob {ref.digest[:16]} given where no result store is")
