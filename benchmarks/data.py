"""The data-heavy workloads: arrays as arguments and as results, and a callable that carries a
large module global, run like those of :mod:`benchmarks.workloads`.

Arrays are made before the clock starts and dropped once the figure is taken, so making
them is not measured and they do not pile up across runs. Task functions live here, at
module level, so every kind of pool refers to them by name; all but ``lookup``, which lives in
``__main__`` on purpose (:func:`main_lookup`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import numpy as np
import redis

from benchmarks.workloads import Pools, Workload

MB = 2**20
ARRAYS = 20
LOOKUPS = 200


def length(megabytes: float, size: float) -> int:
    """How many float64 make ``megabytes`` MB at size factor ``size``."""
    return int(megabytes * size * MB) // 8


def total(array: np.ndarray) -> float:
    return float(array.sum())


def make(count: int, value: int) -> np.ndarray:
    return np.full(count, float(value))


def map_arrays(pools: Pools, size: float) -> float:
    # Integer values: their sums are exact, whichever order a worker adds them in.
    arrays = [np.arange(length(10, size), dtype=np.float64) + i for i in range(ARRAYS)]
    expected = [total(array) for array in arrays]
    with pools.attached() as pool:
        started = time.perf_counter()
        result = pool.map(total, arrays, chunksize=1)
        elapsed = time.perf_counter() - started
    del arrays
    assert result == expected
    return elapsed


def array_results(pools: Pools, size: float) -> float:
    count = length(10, size)
    with pools.attached() as pool:
        started = time.perf_counter()
        arrays = pool.map(partial(make, count), range(ARRAYS), chunksize=1)
        elapsed = time.perf_counter() - started
    assert all(array.shape == (count,) and (array == i).all()
               for i, array in enumerate(arrays))
    del arrays
    return elapsed


@contextmanager
def main_lookup(size: float) -> Iterator[Callable[[int], float]]:
    """``lookup``, a function of ``__main__`` that reads ``TABLE``, a 100 MB global of
    ``__main__``: as a script's function does, it travels by value, its global with it
    (dill ships what a ``__main__`` function refers to). Both are set before any pool is
    made, so that a forked multiprocessing pool inherits them, and removed at the end."""
    namespace = vars(sys.modules["__main__"])
    namespace["TABLE"] = np.arange(length(100, size), dtype=np.float64)
    exec("def lookup(i):\n    return float(TABLE[i % TABLE.size])", namespace)
    try:
        yield namespace["lookup"]
    finally:
        del namespace["lookup"], namespace["TABLE"]


def redis_traffic(url: str | None) -> int:
    """Bytes that have crossed the Redis at ``url`` so far, both ways; 0 without one."""
    if url is None:
        return 0
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("stats")
    finally:
        client.close()
    return int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"])


def map_lookup(pools: Pools, size: float) -> tuple[float, float]:
    """Seconds to map ``lookup`` over 200 items, and MB that crossed the kind's Redis from
    the pool's start to its end."""
    with main_lookup(size) as lookup:
        before = redis_traffic(pools.redis_url)
        with pools.attached() as pool:
            started = time.perf_counter()
            result = pool.map(lookup, range(LOOKUPS), chunksize=1)
            elapsed = time.perf_counter() - started
        moved = redis_traffic(pools.redis_url) - before
    assert result == [float(i) for i in range(LOOKUPS)]
    return elapsed, moved / MB


def big_argument(pools: Pools, size: float) -> float:
    array = np.arange(length(600, size), dtype=np.float64)
    expected = total(array)
    with pools.attached() as pool:
        started = time.perf_counter()
        result = pool.apply(total, (array,))
        elapsed = time.perf_counter() - started
    del array
    assert result == expected
    return elapsed


DATA_WORKLOADS = [
    Workload("map_arrays_20x10MB", "map(total, 20 arrays of 10 MB), chunksize 1", "s", False,
             "<= 1.2 x multiprocessing", lambda mp: 1.2 * mp, map_arrays),
    Workload("results_20x10MB", "map returning 20 arrays of 10 MB, chunksize 1", "s", False,
             "<= 1.2 x multiprocessing", lambda mp: 1.2 * mp, array_results),
    Workload("global_100MB_200_tasks",
             "map a __main__ function with a 100 MB global over 200 items", "s", False,
             "<= 3 s", lambda mp: 3.0, lambda pools, size: map_lookup(pools, size)[0]),
    Workload("global_100MB_redis_MB", "the same: MB through the cluster's Redis", "MB", False,
             "<= 400 MB", lambda mp: 400.0, lambda pools, size: map_lookup(pools, size)[1]),
    Workload("argument_600MB", "apply(total, (one 600 MB array,))", "s", False,
             "completes", lambda mp: math.inf, big_argument),
]
