"""When short tasks share a message, and how the engine spreads them over free slots."""

from __future__ import annotations

import time

import pytest

import distpool
from distpool.client.batching import (
    MAX_BATCH,
    MAX_BATCH_BYTES,
    SHORT_TASK,
    TaskTimes,
    split_evenly,
)


def quick(x):
    return x


def slow(x):
    time.sleep(2 * SHORT_TASK)
    return x


def test_unmeasured_and_long_functions_go_one_per_message():
    times = TaskTimes()
    assert times.batch_size(b"f") == 1
    times.record(b"f", 10 * SHORT_TASK)
    assert times.batch_size(b"f") == 1


def test_short_functions_batch_up_to_a_bounded_amount_of_work():
    times = TaskTimes()
    times.record(b"noop", 1e-6)
    assert times.batch_size(b"noop") == MAX_BATCH
    times.record(b"ms", 0.001)
    assert 1 < times.batch_size(b"ms") <= 20


def test_the_running_mean_follows_a_function_that_slows_down():
    times = TaskTimes()
    times.record(b"f", 1e-5)
    for _ in range(30):
        times.record(b"f", 1.0)
    assert times.batch_size(b"f") == 1


@pytest.mark.parametrize("n, parts, lengths", [
    (10, 3, [4, 3, 3]), (2, 4, [1, 1]), (0, 2, []), (6, 1, [6])])
def test_split_evenly(n, parts, lengths):
    runs = split_evenly(list(range(n)), parts)
    assert [len(run) for run in runs] == lengths
    assert [x for run in runs for x in run] == list(range(n))


def test_a_burst_of_short_tasks_shares_messages_spread_over_free_slots(manual):
    with distpool.Pool(2) as pool:
        manual.run_until_ready(pool.apply_async(quick, (0,)))  # measured: short
        results = [pool.apply_async(quick, (i,)) for i in range(200)]
        for result in results:
            manual.run_until_ready(result)
        assert [r.get() for r in results] == list(range(200))
    burst = manual.messages[1:]
    assert len(burst) < 200 / 4
    assert max(len(message) for message in burst) <= MAX_BATCH
    assert manual.max_in_flight <= 2


def test_long_tasks_are_never_batched(manual):
    with distpool.Pool(2) as pool:
        manual.run_until_ready(pool.apply_async(slow, (0,)))
        result = pool.map_async(slow, range(6), chunksize=1)
        manual.run_until_ready(result)
        assert result.get() == list(range(6))
    assert all(len(message) == 1 for message in manual.messages)


def test_short_tasks_with_large_arguments_share_messages_only_up_to_a_byte_budget(manual):
    data = b"x" * (MAX_BATCH_BYTES // 4)
    with distpool.Pool(2) as pool:
        manual.run_until_ready(pool.apply_async(quick, (0,)))  # measured: short
        results = [pool.apply_async(quick, (data,)) for _ in range(40)]
        for result in results:
            manual.run_until_ready(result)
    burst = manual.messages[1:]
    assert sum(len(message) for message in burst) == 40
    assert max(len(message) for message in burst) <= 5  # about 1 MiB of arguments each
