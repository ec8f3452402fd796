"""Named runs that survive their client: ``Pool(checkpoint="forecast-w48")``.

A pool with a run name journals every result it receives on this machine's disk
(:mod:`.journal`), by call and by position: the k-th call made to the pool, and the item's
place in it, with a digest of the item's arguments (:mod:`.digest`). Run again with the same
name after its client died, the same script is matched call by call::

    pool.map(f, items)       call k of the run
        │                                                   journal <dir>/<name>/
        ├─ f's name and code ─────────────────────────────▶ ("call", k, kind, name, code)
        ├─ items journaled with an equal digest ─▶ their results at once (pool.resumed)
        └─ the others, chunked afresh ─▶ engine ─▶ results ─▶ ("result", k, i, digest, value)

A different function at call k is an error naming both; the same function with other code
(its serialised form differs) a warning, and the journaled results are used. An item whose
digest differs is computed again, never given a wrong result. Only results are journaled:
a failure is computed again on the next run.

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import CheckpointError, RemoteTraceback
from ..transports.base import RunHolds
from ..wire import serialization
from ..wire.payload import Payload
from .digest import digest
from .journal import Journal
from .results import JobResult

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
        if journal.finished:  # a finished run's name used again: a new run
            journal.restart()
        for raw in journal.previous:
            self._read(raw)
        journal.previous = []  # (read: kept once, in _journaled)

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
                self._journaled[index] = _Journaled(kind, function, code)
            elif record[0] == _RECORD_RESULTS:
                _, index, positions, digests, data = record
                results, chunk = self._journaled[index].results, _Results(data)
                for offset, (position, argument_digest) in enumerate(zip(positions, digests)):
                    results[position] = (argument_digest, chunk, offset)
        except Exception:  # not a record of ours: its results are computed again
            return

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
                values: list[Any]) -> None:
        data = serialization.dumps(values).contiguous()
        self._journal.append(pickle.dumps(
            (_RECORD_RESULTS, index, positions, digests, bytes(data))))

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

    def journaled(self, position: int, arguments: object) -> tuple[bytes, bool, Any]:
        """The digest of the item's ``arguments``, and whether the journal holds its result
        (for those arguments), with that result."""
        try:
            found = digest(arguments)
        except TypeError:  # no canonical digest: computed again, never reused
            return b"", False, None
        kept = self._journaled.get(position)
        if kept is None or kept[0] != found:
            return found, False, None
        try:
            value = kept[1].value(kept[2])
        except Exception:  # a result that cannot be loaded any more: computed again
            return found, False, None
        with self._run._lock:
            self._run.resumed += 1
        return found, True, value

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


class Remaining:
    """The job of a resumed call's items that the journal did not hold: the result of each
    of its chunks goes, item by item, into the journal and to the caller's result, at the
    item's place in the call (``positions``). ``single``: an ``apply``, whose one result is
    not a list."""

    remote_traceback: ClassVar[type[Exception]] = RemoteTraceback

    def __init__(self, target: JobResult, call: Call, positions: list[int],
                 digests: list[bytes], chunksize: int = 1, single: bool = False) -> None:
        self._target = target
        self._call = call
        self._positions = positions
        self._digests = digests
        self._chunksize = chunksize
        self._single = single
        self._read = 0  # items of a lazy input read so far (see read_lazily)
        self._failed_reading = 0

    @property
    def quiet(self) -> bool:
        return self._target.quiet

    def set_outcome(self, index: int, success: bool, value: Any) -> None:
        first = index * self._chunksize
        places = range(first, min(first + self._chunksize, len(self._positions)))
        positions = [self._positions[place] for place in places]
        if success:
            items = [value] if self._single else list(value)
            self._call.record(positions, [self._digests[place] for place in places], items)
        for offset, position in enumerate(positions):
            if not success:
                self._target.set_outcome(position, False, value)
            elif self._single:
                self._target.set_outcome(position, True, value)
            else:
                self._target.set_outcome(position, True, [value[offset]])

        if not places and not success:  # reading the input failed before this chunk's first
            self._target.set_outcome(self._read, False, value)
            self._failed_reading = 1

    def input_failed(self, sent: int, exc: BaseException) -> None:
        for place in range(sent * self._chunksize, len(self._positions)):
            self._target.set_outcome(self._positions[place], False, exc)

    def input_ended(self, length: int, items: int) -> None:
        """An imap's input is exhausted: the caller's iterator had one result (or failure)
        per item read, and one for a failure to read the next."""
        target: Any = self._target
        target.input_ended(self._read + self._failed_reading, self._read)

    def read_lazily(self, items: Iterator[Any]) -> Iterator[Any]:
        """An imap's input, read as the engine asks for it: the items the journal holds
        complete at once in the caller's iterator, the others are passed on to be sent."""
        for position, item in enumerate(items):
            self._read = position + 1
            argument_digest, found, value = self._call.journaled(position, item)
            if found:
                self._target.set_outcome(position, True, [value])
                continue
            self._positions.append(position)
            self._digests.append(argument_digest)
            yield item

    def abort(self, exc: BaseException) -> None:
        self._target.abort(exc)


def resume_items(call: Call, target: JobResult, items: Sequence[Any],
                 ) -> tuple[list[int], list[bytes], list[Any]]:
    """Complete at once, in ``target``, the items of ``call`` whose results the journal
    holds; the places, digests and arguments of the others, to be sent."""
    positions: list[int] = []
    digests: list[bytes] = []
    remaining: list[Any] = []
    for position, item in enumerate(items):
        argument_digest, found, value = call.journaled(position, item)
        if found:
            target.set_outcome(position, True, [value])
        else:
            positions.append(position)
            digests.append(argument_digest)
            remaining.append(item)
    return positions, digests, remaining
