"""When to send several short tasks in one message, and how many.

Every message costs a few milliseconds however short its task: the publish, the worker's
hand-off to a process, the acknowledgement. For tasks that run for less than that, the
engine packs tasks of the same function into one message. It does so only for functions
*measured* to be short (workers report each task's run time), and spreads what is queued
evenly over the free slots, so long tasks still go one per slot and no slot idles while a
batch waits: the scheduling of long tasks is untouched.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import TypeVar, Union

from ..wire.envelope import Data
from ..wire.payload import INLINE_CALLABLE_LIMIT, Payload

T = TypeVar("T")

#: A function is batched when its tasks take less than this on average (seconds).
SHORT_TASK = 0.005
#: A batch holds about this much work (seconds), and never more than MAX_BATCH tasks.
BATCH_WORK = 0.02
MAX_BATCH = 64
#: Nor more than about this many bytes of arguments: the per-message costs batching saves
#: are dwarfed by moving larger data, and a batch's data is held and sent all at once.
MAX_BATCH_BYTES = 2**20
#: How many functions' run times are remembered.
MAX_FUNCTIONS = 256
#: Weight of the newest measurement in the running mean.
SMOOTHING = 0.2


#: How :class:`TaskTimes` knows a function: see :func:`function_key`.
FunctionKey = Union[bytes, str]


def function_key(function: Data) -> FunctionKey:
    """A callable's bytes while it travels inline (a dictionary hashes them faster than
    SHA-256 does), else the hash that names its blob: the same key before it is staged and
    after."""
    if isinstance(function, Payload) and function.nbytes <= INLINE_CALLABLE_LIMIT:
        return function.to_bytes()
    return function.digest


class TaskTimes:
    """Running mean of task run time per function (keyed by :func:`function_key`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._means: collections.OrderedDict[FunctionKey, float] = collections.OrderedDict()

    def record(self, function: FunctionKey, seconds: float) -> None:
        with self._lock:
            mean = self._means.pop(function, None)
            self._means[function] = seconds if mean is None else (
                mean + SMOOTHING * (seconds - mean))
            if len(self._means) > MAX_FUNCTIONS:
                self._means.popitem(last=False)

    def batch_size(self, function: FunctionKey) -> int:
        """How many tasks of ``function`` one message may carry: 1 unless measured short."""
        with self._lock:
            mean = self._means.get(function)
        if mean is None or mean >= SHORT_TASK:
            return 1
        return max(1, min(MAX_BATCH, int(BATCH_WORK / max(mean, 1e-6))))


def split_evenly(items: Sequence[T], parts: int) -> list[list[T]]:
    """``items`` in order, cut into ``parts`` runs whose lengths differ by at most one."""
    size, extra = divmod(len(items), parts)
    runs, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        runs.append(list(items[start:end]))
        start = end
    return [run for run in runs if run]
