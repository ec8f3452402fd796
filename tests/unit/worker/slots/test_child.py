"""distpool.worker.slots.child.SlotPool: a slot retires after the message that ran out a
pool's maxtasksperchild, before that message is acknowledged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from celery.worker import state as worker_state

from distpool.worker import execute
from distpool.worker.slots.child import SlotPool


@pytest.fixture
def make_slot(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., SlotPool]]:
    """A slot's pool, with ``celery worker`` options; its process not yet spent."""
    monkeypatch.setattr(execute, "_spent", False)
    monkeypatch.setattr(worker_state, "should_stop", None)
    pools: list[SlotPool] = []

    def make(**options: Any) -> SlotPool:
        app = Celery(set_as_current=False)
        app.distpool_retiring = False
        pools.append(SlotPool(limit=1, app=app, **options))
        return pools[-1]

    yield make
    for pool in pools:
        pool.on_stop()


def run(pool: SlotPool, target: Callable[[], None]) -> list[bool]:
    """Run ``target`` as a message's task; whether the slot was retiring when the message
    was acknowledged."""
    acknowledged: list[bool] = []

    def acknowledge(_: Any) -> None:
        acknowledged.append(pool.app.distpool_retiring)

    pool.on_apply(target, (), {}, callback=acknowledge).wait(10)
    return acknowledged


def spend() -> None:
    execute._spent = True  # as execute() does at a pool's maxtasksperchild-th task


def test_a_slot_retires_once_a_pools_limit_ran_out_and_before_the_acknowledgement(
        make_slot: Callable[..., SlotPool]) -> None:
    slot = make_slot()
    assert run(slot, lambda: None) == [False]
    assert worker_state.should_stop is None
    assert run(slot, spend) == [True]
    assert worker_state.should_stop == 0  # Celery's warm shutdown, exit status 0


def test_the_nodes_max_tasks_per_child_still_counts_messages(
        make_slot: Callable[..., SlotPool]) -> None:
    slot = make_slot(maxtasksperchild=2)
    assert run(slot, lambda: None) == [False]
    assert run(slot, lambda: None) == [True]
