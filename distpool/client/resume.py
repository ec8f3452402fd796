"""Named runs that survive their client: ``Pool(checkpoint="forecast-w48")``.

A pool with a run name journals every result it receives on this machine's disk
(:mod:`.journal`), by call and by position: the k-th call made to the pool, and the item's
place in it, with a digest of the item's arguments (:mod:`.digest`). Run again with the same
name after its client died, the same script is matched call by call::

    pool.map(f, items)       call k of the run
        │                                                   journal <dir>/<name>/
        ├─ f's name and code ─────────────────────────────▶ ("call", k, kind, name, code)
        ├─ items journaled with an equal digest ─▶ their results at once (pool.resumed)
        ├─ items an earlier client's task runs still ─▶ its results as they come (ditto)
        └─ the others, chunked afresh ─▶ engine ─▶ results ─▶ ("result", k, i, digest, value)

A different function at call k is an error naming both; the same function with other code
(its serialised form differs) a warning, and the journaled results are used. An item whose
digest differs is computed again, never given a wrong result. Failures are not journaled:
they are computed again on the next run. On a cluster, the messages the pool sends are
journaled too, and a rerun takes over those still running (:mod:`.adoption`).

The journal is held by one process at a time (a file lock the system releases when that
process dies, however it dies). A run closed cleanly (``close()`` and ``join()``, or the end
of a ``with`` block without an exception) is marked finished: its name, used again, starts
afresh, as weekly runs reuse names. ``distpool checkpoints`` lists the journals.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import pickle
import re
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError
from ..transports.base import ResultStore, RunHolds
from ..wire import serialization
from ..wire.envelope import ResultRecord
from ..wire.payload import Payload
from ..wire.signing import Signer
from .adoption import RECORD_POOL, RECORD_SENT, AdoptedJob, Handover, SentTask
from .digest import digest
from .journal import Journal
from .records import payload_of
from .results import JobResult
from .tasks import Task

if TYPE_CHECKING:
    from .remaining import Remaining

#: The directory of the journals, unless ``$DISTPOOL_CHECKPOINT_DIR`` names another.
DEFAULT_DIRECTORY = ".distpool"
#: How long a run's hold in the result store lasts unless its client renews it, and how
#: often the client does: a rerun after a SIGKILL waits at most that long.
HOLD_TTL = 10.0
HOLD_RENEWAL = 2.0
#: What a run name may hold: it names a directory.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

logger = logging.getLogger("distpool")

_RECORD_CALL = "call"
_RECORD_RESULTS = "results"

# The pools a process creates under $DISTPOOL_CHECKPOINT: NAME, NAME.2, NAME.3, ...
_numbering = itertools.count(1)
_numbering_lock = threading.Lock()


def run_name(checkpoint: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The pool's run name: ``checkpoint``, else ``$DISTPOOL_CHECKPOINT`` numbered in the
    order this process creates its pools (``NAME``, ``NAME.2``, ...), so that a script whose
    code names no run resumes too; None for a pool that journals nothing. ``ValueError``
    for a name that cannot name a directory."""
    name = checkpoint
    if name is None:
        base = environ.get("DISTPOOL_CHECKPOINT")
        if not base:
            return None
        with _numbering_lock:
            number = next(_numbering)
        name = base if number == 1 else f"{base}.{number}"
    if not NAME.fullmatch(name):
        raise ValueError(f"checkpoint={name!r}: a run name is letters, digits, '.', '_' and "
                         "'-', starting with a letter or digit, at most 128 characters")
    return name


def journal_root(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("DISTPOOL_CHECKPOINT_DIR") or DEFAULT_DIRECTORY


class _Results:
    """The results of one chunk, as journaled: serialised together, loaded when first
    needed (by the first of its items that a rerun takes)."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data
        self._values: list[Any] = []

    def value(self, offset: int) -> Any:
        if self._data is not None:
            self._values, self._data = serialization.loads(Payload.of_bytes(self._data)), None
        return self._values[offset]


@dataclass
class _Journaled:
    """A call as an earlier run journaled it."""

    kind: str
    function: str
    code: str
    #: position -> (the digest of its arguments, its result: a chunk's results and where)
    results: dict[int, tuple[bytes, _Results, int]] = field(default_factory=dict)


class NamedRun:
    """A pool's named run: its journal, held by this process, and the calls of the run
    that journaled it before."""

    def __init__(self, name: str, journal: Journal) -> None:
        self.name = name
        self._journal = journal
        self._calls = itertools.count()
        self._lock = threading.Lock()
        self._holds: tuple[RunHolds, str] | None = None
        self._closed = threading.Event()
        #: How many results were taken from the journal instead of computed.
        self.resumed = 0
        self._journaled: dict[int, _Journaled] = {}
        self._handover = Handover()
        # job -> what its call sends, while the engine has the job
        self._sending: weakref.WeakValueDictionary[int, Remaining] = (
            weakref.WeakValueDictionary())
        if journal.finished:  # a finished run's name used again: a new run
            journal.restart()
        for raw in journal.previous:
            self._read(raw)
        journal.previous = []  # (read: kept once, in _journaled)
        self.unanswered()  # (only those are kept of the messages sent)

    @classmethod
    def open(cls, name: str, root: str) -> NamedRun:
        """Hold the run ``name``'s journal in ``root``; raises
        :class:`~distpool.errors.CheckpointError` naming the process that holds it."""
        return cls(name, Journal.open(os.path.join(root, name)))

    def _read(self, raw: bytes) -> None:
        try:
            record = pickle.loads(raw)
            if record[0] == _RECORD_CALL:
                _, index, kind, function, code = record
                earlier = self._journaled.get(index)
                if earlier is None or (earlier.kind, earlier.function) != (kind, function):
                    self._journaled[index] = _Journaled(kind, function, code)
                else:  # a rerun's call: what the runs before it journaled still holds
                    earlier.code = code
            elif record[0] == _RECORD_RESULTS:
                _, index, positions, digests, data = record
                self._keep(index, positions, digests, _Results(data))
            elif record[0] in (RECORD_POOL, RECORD_SENT):
                self._handover.read(record)
        except Exception:  # not a record of ours: its results are computed again
            return

    def _keep(self, index: int, positions: list[int], digests: list[bytes],
              chunk: _Results) -> None:
        results = self._journaled[index].results
        for offset, (position, argument_digest) in enumerate(zip(positions, digests)):
            results[position] = (argument_digest, chunk, offset)

    def call(self, kind: str, function: str, code: Payload) -> Call:
        """The next call of the run: ``kind`` (map, starmap, apply), the callable's name
        (module and qualified name) and its serialised form. Raises
        :class:`~distpool.errors.CheckpointError` if the earlier run made another call
        here; warns if the callable's code changed."""
        with self._lock:
            index = next(self._calls)
        code_digest = hashlib.sha256(code.contiguous()).hexdigest()
        earlier = self._journaled.get(index)
        if earlier is not None and (earlier.kind, earlier.function) != (kind, function):
            raise CheckpointError(
                f"run {self.name!r}, call {index + 1}: this script calls {kind}({function}), "
                f"where the journaled run called {earlier.kind}({earlier.function}). Remove "
                f"the journal to start afresh: distpool checkpoints rm {self.name}")
        if earlier is not None and earlier.code != code_digest:
            warnings.warn(
                f"run {self.name!r}, call {index + 1}: the code of {function} changed since "
                f"its results were journaled; they are used as they are (distpool "
                f"checkpoints rm {self.name} starts afresh)", stacklevel=4)
        self._journal.append(pickle.dumps((_RECORD_CALL, index, kind, function, code_digest)))
        return Call(self, index, {} if earlier is None else earlier.results)

    def _record(self, index: int, positions: list[int], digests: list[bytes],
                values: list[Any]) -> bytes:
        data = bytes(serialization.dumps(values).contiguous())
        self._journal.append(pickle.dumps((_RECORD_RESULTS, index, positions, digests, data)))
        return data

    # -- taking over an earlier client's work in flight (see .adoption) ----------------

    @property
    def next_job(self) -> int:
        return self._handover.next_job

    def unanswered(self) -> list[str]:
        """The messages earlier clients sent whose items the journal lacks."""
        def answered(task: SentTask) -> bool:
            results = self._journaled.get(task.call, _Journaled("", "", "")).results
            return all(results.get(position, (b"",))[0] == argument_digest
                       for position, argument_digest in zip(task.positions, task.digests))

        return self._handover.unanswered(answered)

    def take_over(self, store: ResultStore, signer: Signer,
                  ) -> tuple[str, list[list[Task]], dict[int, list[SentTask]]] | None:
        """The pool of the run's last client on a cluster, if its workers keep it live
        still, to go on with: the results that client left are journaled, and the messages
        it sent whose results are still to come are returned, to keep in flight, with
        their tasks by job (see :mod:`.adoption`)."""
        pool_id = self._handover.pool_id
        if pool_id is None:
            return None
        unanswered = self.unanswered()
        # The states first: a message done by then has its record in the lists read next.
        states = dict(zip(unanswered, store.message_states(pool_id, unanswered)))
        left = store.resume_pool(pool_id)
        if left is None:
            return None

        def load(record: ResultRecord) -> Payload:
            payload = payload_of(record, store.blobs, pool_id)
            return payload if isinstance(payload, Payload) else payload()

        def label(call: int) -> str | None:
            earlier = self._journaled.get(call)
            return None if earlier is None else earlier.function

        messages, jobs = self._handover.take_over(pool_id, states, left, signer, load,
                                                  self._adopted, label)
        return pool_id, messages, jobs

    def adopted_jobs(self, jobs: dict[int, list[SentTask]],
                     done: Callable[[int], None]) -> dict[int, JobResult]:
        """The result objects of the jobs :meth:`take_over` returned (``done``: the
        engine's ``job_done``)."""
        return {job: AdoptedJob(job, tasks, self.landed, done) for job, tasks in jobs.items()}

    def _adopted(self, index: int, positions: list[int], digests: list[bytes],
                 value: Any) -> list[Any]:
        """Journal the results of an earlier client's task (``value``, its payload), and keep
        them for the call of this run that has yet to take them; return them, one an item."""
        values = self._items(index, value)
        data = self._record(index, positions, digests, values)
        with self._lock:
            if index in self._journaled:
                self._keep(index, positions, digests, _Results(data))
        return values

    def _items(self, index: int, value: Any) -> list[Any]:
        """A task's result as a list of its items' (an apply's is the one result itself)."""
        earlier = self._journaled.get(index)
        return [value] if earlier is not None and earlier.kind == "apply" else list(value)

    def started(self, pool_id: str) -> None:
        """The run's pool is ``pool_id``, on a cluster: its messages are journaled from now
        on, for a rerun to take over."""
        if pool_id != self._handover.pool_id:
            self._handover.pool_id = pool_id
            self._journal.append(pickle.dumps((RECORD_POOL, pool_id)))

    def sent(self, messages: list[tuple[list[Task], list[dict[str, Any]]]]) -> None:
        """Journal messages about to be sent: their tasks' places in the run, and the
        messages as they travel (``Engine``'s ``on_sent``)."""
        for tasks, wire in messages:
            try:
                carried = [SentTask(task.job, task.index, self._sending[task.job].call_index,
                                    *self._sending[task.job].chunk(task.index))
                           for task in tasks]
                self._journal.append(pickle.dumps(Handover.sent_record(
                    tasks[0].envelope.task_id, carried, wire)))
            except Exception as exc:  # sent all the same; a rerun computes it again
                logger.warning("run %r: could not journal message %s: %s", self.name,
                               tasks[0].envelope.task_id, exc)

    def landed(self, task: SentTask, ok: bool, value: Any) -> None:
        """The outcome of an earlier client's task that this run took over: journaled, and
        handed to the callers waiting for its items."""
        values = self._adopted(task.call, task.positions, task.digests, value) if ok else []
        with self._lock:
            waiting = self._handover.arrived(task)
            if ok:
                self.resumed += len(waiting)
        for offset, waiter in waiting:
            outcome = (values[offset] if waiter.single else [values[offset]]) if ok else value
            waiter.target.set_outcome(task.positions[offset], ok, outcome)

    def hold_in(self, holds: RunHolds) -> None:
        """Hold the run in the result store too, for the clients of other hosts, and keep
        it held until :meth:`close`. A hold whose client died lapses within
        :data:`HOLD_TTL`: waited for; one still renewed raises
        :class:`~distpool.errors.CheckpointError` naming its holder."""
        holder = f"{socket.gethostname()}:{os.getpid()}"
        deadline = time.monotonic() + HOLD_TTL + HOLD_RENEWAL
        while (other := holds.hold_run(self.name, holder, HOLD_TTL)) is not None:
            if time.monotonic() > deadline:
                holds.close()
                raise CheckpointError(f"run {self.name!r} is held by {other} (seen through "
                                      "the result store): one client per run name")
            time.sleep(HOLD_RENEWAL / 4)
        self._holds = (holds, holder)
        threading.Thread(target=self._renew_hold, name=f"distpool-run-{self.name}",
                         daemon=True).start()

    def _renew_hold(self) -> None:
        holds, holder = self._holds or (None, "")
        while holds is not None and not self._closed.wait(HOLD_RENEWAL):
            try:
                other = holds.hold_run(self.name, holder, HOLD_TTL)
            except Exception:  # the store is away: the pool says so; the hold may lapse
                continue
            if other is not None:
                logger.error("run %r: the result store says %s holds it now", self.name,
                             other)

    def finish(self) -> None:
        """The run ended cleanly: its name, used again, starts afresh."""
        self._journal.finish()
        self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._journal.close()
        if self._holds is not None:
            holds, holder = self._holds
            try:
                holds.release_run(self.name, holder)
            except Exception:  # it lapses on its own
                pass
            holds.close()


class Call:
    """One call of a named run: what it may take from the journal, and what it journals."""

    def __init__(self, run: NamedRun, index: int,
                 journaled: dict[int, tuple[bytes, _Results, int]]) -> None:
        self._run = run
        self._index = index
        self._journaled = journaled

    @property
    def index(self) -> int:
        return self._index

    def take(self, position: int, arguments: object, target: JobResult,
             single: bool = False) -> bytes | None:
        """Complete the item at ``position`` in ``target`` from the journal, or leave it to
        an earlier client's task that still runs it, for the same ``arguments``: None then.
        Else the digest of its arguments (empty if they have none), to send it."""
        try:
            found = digest(arguments)
        except TypeError:  # no canonical digest: computed again, never reused
            return b""
        run = self._run
        kept = self._journaled.get(position)
        if kept is None or kept[0] != found:
            if not run._handover.pending:  # nothing to wait for: the common case, lock-free
                return found
            with run._lock:  # (its result may have come meanwhile)
                kept = self._journaled.get(position)
                if kept is None or kept[0] != found:
                    waits = run._handover.wait_for(self._index, position, found, target,
                                                   single)
                    return None if waits else found
        try:
            value = kept[1].value(kept[2])
        except Exception:  # a result that cannot be loaded any more: computed again
            return found
        with run._lock:
            run.resumed += 1
        target.set_outcome(position, True, value if single else [value])
        return None

    def sends(self, job: int, remaining: Remaining) -> None:
        """The items of this call that are sent go as job ``job``: ``remaining`` says which
        items each of its tasks carries, for the journal."""
        self._run._sending[job] = remaining

    def record(self, positions: list[int], digests: list[bytes], values: list[Any]) -> None:
        """Journal the results ``values`` of the items at ``positions`` (one record for a
        chunk's), but for those without a digest, which no rerun could match."""
        kept = [i for i, argument_digest in enumerate(digests) if argument_digest]
        if not kept:
            return
        if len(kept) < len(digests):
            positions = [positions[i] for i in kept]
            digests = [digests[i] for i in kept]
            values = [values[i] for i in kept]
        try:
            self._run._record(self._index, positions, digests, values)
        except Exception as exc:  # the result still reaches its caller; a rerun recomputes it
            logger.warning("run %r: could not journal a result of call %d: %s",
                           self._run.name, self._index + 1, exc)
