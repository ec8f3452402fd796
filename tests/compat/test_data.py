"""Data that travels out of band (arrays, large bytes, a function's large global) gives the
same results through multiprocessing.Pool and distpool.Pool, at test size."""

from __future__ import annotations

import sys

import numpy
import pytest

# Larger than what rides inside a message (16 KiB), in several blob parts (1 MiB).
MB = 2**20


def total(array):
    return float(array.sum())


def filled(i):
    return numpy.full(MB // 8, float(i))


def doubled_in_place(array):
    array *= 2  # the task's own copy, writable as under multiprocessing
    return array


def reversed_bytes(data):
    return data[::-1]


def echo(value):
    return value


def test_map_over_arrays(make_pool):
    arrays = [numpy.random.default_rng(i).random(3 * MB // 8) for i in range(5)]
    pool = make_pool(2)
    assert pool.map(total, arrays, chunksize=1) == [float(a.sum()) for a in arrays]
    assert pool.map(total, arrays, chunksize=2) == [float(a.sum()) for a in arrays]


def test_arrays_come_back_whole_and_writable(make_pool):
    pool = make_pool(2)
    results = pool.map(filled, range(4), chunksize=1)
    for i, array in enumerate(results):
        assert array.shape == (MB // 8,) and (array == i).all()
        array[0] = -1.0


def test_a_task_may_change_its_array_and_the_callers_is_untouched(make_pool):
    original = numpy.arange(MB // 8, dtype=numpy.float64)
    pool = make_pool(2)
    changed = pool.apply(doubled_in_place, (original,))
    assert numpy.array_equal(changed, 2 * numpy.arange(MB // 8))
    assert numpy.array_equal(original, numpy.arange(MB // 8))


def test_large_bytes_and_nested_structures(make_pool):
    data = bytes(range(256)) * (MB // 256 + 7)
    pool = make_pool(2)
    assert pool.apply(reversed_bytes, (data,)) == data[::-1]
    nested = {"case": "grid", "loads": [numpy.ones(100_000), numpy.zeros(3)], "raw": data}
    back = pool.apply(echo, (nested,))
    assert back["case"] == "grid" and back["raw"] == data
    assert [a.tolist() for a in back["loads"]] == [a.tolist() for a in nested["loads"]]
    sums = pool.starmap(numpy.add, [(numpy.ones(200_000), numpy.full(200_000, float(i)))
                                    for i in range(3)])
    assert [float(s.sum()) for s in sums] == [200_000.0 * (1 + i) for i in range(3)]


@pytest.fixture
def main_with_table():
    """A function of ``__main__`` reading a 4 MB module global, as in a user's script: it
    travels by value, with the global, to distpool's workers; a forked multiprocessing pool
    inherits both."""
    main = sys.modules["__main__"]
    main.TABLE = numpy.arange(4 * MB // 8, dtype=numpy.float64)
    exec("def lookup(i):\n    return float(TABLE[i * 1000 % TABLE.size])", main.__dict__)
    yield main.lookup
    del main.TABLE, main.lookup


def test_a_function_reading_a_large_module_global(make_pool, main_with_table):
    pool = make_pool(2)
    assert pool.map(main_with_table, range(50), chunksize=1) == [
        float(i * 1000 % (4 * MB // 8)) for i in range(50)]
    assert pool.apply(main_with_table, (3,)) == 3000.0
