"""The backoff of a process that keeps failing (distpool.worker.slots.restarts.Backoff), on a
fake clock."""

from __future__ import annotations

from distpool.worker.slots.restarts import Backoff


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_delay_doubles_from_1_s_up_to_60_s():
    clock = Clock()
    backoff = Backoff(clock=clock)
    delays = []
    for _ in range(9):
        backoff.started()
        clock.now += 0.5  # dies at once
        delays.append(backoff.failed())
        clock.now += delays[-1]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.failures == 9


def test_a_run_of_60_s_makes_the_next_failure_a_first_again():
    clock = Clock()
    backoff = Backoff(clock=clock)
    for _ in range(5):
        backoff.started()
        clock.now += 59  # not quite stable
        backoff.failed()
    assert backoff.delay() == 16
    backoff.started()
    clock.now += 60
    assert backoff.stable()
    assert backoff.failed() == 1 and backoff.failures == 1


def test_failing_means_enough_failures_in_a_row_and_not_up_and_stable_since():
    clock = Clock()
    backoff = Backoff(clock=clock)
    for _ in range(3):
        backoff.started()
        backoff.failed()
    assert backoff.failing(3) and not backoff.failing(4)
    clock.now += 600  # a long wait for the restart does not count as a stable run
    assert backoff.failing(3)
    backoff.started()
    assert backoff.failing(3)  # up, but not for long yet
    clock.now += 60
    assert not backoff.failing(3)


def test_an_end_that_is_not_a_failure_neither_counts_nor_resets():
    clock = Clock()
    backoff = Backoff(clock=clock)
    backoff.started()
    backoff.failed()
    backoff.started()
    clock.now += 120
    backoff.ended()  # its task killed it, or it chose to end
    assert backoff.failures == 1 and backoff.delay() == 1
    backoff.started()
    assert backoff.failed() == 2
