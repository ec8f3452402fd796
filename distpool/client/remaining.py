"""The items of a named run's call that are sent: those neither its journal holds nor an
earlier client's task still runs (see :mod:`.resume`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from ..errors import RemoteTraceback
from .results import JobResult
from .resume import Call


class Remaining:
    """The job of a resumed call's items that the journal did not hold: the result of each
    of its chunks goes, item by item, into the journal and to the caller's result, at the
    item's place in the call (``positions``). ``single``: an ``apply``, whose one result is
    not a list."""

    remote_traceback: ClassVar[type[Exception]] = RemoteTraceback

    def __init__(self, target: JobResult, call: Call, job: int, positions: list[int],
                 digests: list[bytes], chunksize: int = 1, single: bool = False) -> None:
        call.sends(job, self)
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

    @property
    def call_index(self) -> int:
        return self._call.index

    def chunk(self, index: int) -> tuple[list[int], list[bytes]]:
        """The places in the call, and the digests, of the items of chunk ``index``."""
        places = slice(index * self._chunksize, (index + 1) * self._chunksize)
        return self._positions[places], self._digests[places]

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
            argument_digest = self._call.take(position, item, self._target)
            if argument_digest is None:
                continue
            self._positions.append(position)
            self._digests.append(argument_digest)
            yield item

    def abort(self, exc: BaseException) -> None:
        self._target.abort(exc)


def resume_items(call: Call, target: JobResult, items: Sequence[Any],
                 ) -> tuple[list[int], list[bytes], list[Any]]:
    """Complete at once, in ``target``, the items of ``call`` whose results the journal
    holds, and leave to them the items an earlier client's tasks still run; the places,
    digests and arguments of the others, to be sent."""
    positions: list[int] = []
    digests: list[bytes] = []
    remaining: list[Any] = []
    for position, item in enumerate(items):
        argument_digest = call.take(position, item, target)
        if argument_digest is not None:
            positions.append(position)
            digests.append(argument_digest)
            remaining.append(item)
    return positions, digests, remaining
