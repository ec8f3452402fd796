"""A worker process's runner against a real store: the watchdog that renews the running
message's claim stops the process only when another process really has the message."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from distpool.redis_client.protocol import RedisConnectionError
from distpool.store.keys import pool_of
from distpool.wire import serialization
from distpool.wire.envelope import ResultRecord, TaskEnvelope
from distpool.wire.signing import Signer
from distpool.worker import runner as runner_module
from distpool.worker.runner import TaskRunner
from tests.support import message_of_a_live_pool

pytestmark = pytest.mark.integration

KEY = Signer(b"the cluster's key")
#: The exit codes the runner's watchdog stopped this process with (its os._exit, replaced).
stops: list[int] = []


@pytest.fixture(autouse=True)
def watchdog_stops_recorded(monkeypatch):
    stops.clear()
    monkeypatch.setattr(runner_module.os, "_exit", stops.append)


def until_stopped(timeout: float) -> None:
    """A task that runs until the watchdog stops its process (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while not stops and time.monotonic() < deadline:
        time.sleep(0.005)


def run_first_delivery(runner: TaskRunner, message: str, function: Any, *args: Any) -> None:
    """Run ``function(*args)`` as the one task of ``message``, delivered for the first time."""
    envelope = TaskEnvelope(pool_of(message), message, "apply", serialization.dumps(function),
                            serialization.dumps((args, {})))
    runner.run([envelope.to_wire(KEY)], message, redelivered=False,
               raise_soft_limit_after=None)


def test_renewals_racing_the_end_of_each_run_never_stop_the_process(store, monkeypatch):
    # Renewals every millisecond or two, over hundreds of sub-millisecond runs: some reach
    # Redis after a run has pushed its results and find its claim "done". That is the run's
    # own end, not another process's run, and must not stop the process.
    monkeypatch.setattr(runner_module, "WATCHDOG_INTERVAL", 0.001)
    runner = TaskRunner(store, KEY, claim_ttl=0.006, flags_redeliveries=True)
    pool_id = pool_of(message_of_a_live_pool(store))
    for job in range(400):
        run_first_delivery(runner, f"{pool_id}:{job}:0", len, "abc")
    records = [ResultRecord.from_bytes(raw, KEY, pool_id)
               for raw in store.pop_results(pool_id, 5)]
    assert stops == []
    assert len(records) == 400 and all(record.ok for record in records)


def test_a_message_another_process_ran_to_the_end_stops_its_frozen_holder(store, monkeypatch):
    monkeypatch.setattr(runner_module, "WATCHDOG_INTERVAL", 0.01)
    message = message_of_a_live_pool(store)
    runner = TaskRunner(store, KEY, claim_ttl=30, flags_redeliveries=True)
    # While it runs, the message's claim says another process finished it (this one had
    # been frozen past its claim's life).
    store.finish(message)
    run_first_delivery(runner, message, until_stopped, 5.0)
    assert stops == [runner_module.EXIT_POOL_GONE]


#: The store the task below ends its pool in (set by the test that runs it).
ending: list[Any] = []


def end_my_pool(pool_id: str) -> str:
    """A task whose pool ends while it runs (as terminate() does)."""
    ending[0].close_pool(pool_id)
    return pool_id


def test_a_first_delivery_that_another_process_holds_pushes_nothing(store):
    # The broker gave the message to two consumers: this one ran it too, and drops its results.
    message = message_of_a_live_pool(store)
    store.claim(message, "host:9:other", ttl=30)
    run_first_delivery(TaskRunner(store, KEY, claim_ttl=30, flags_redeliveries=True),
                       message, len, "abc")
    assert store.pop_results(pool_of(message), 0.1) == []
    assert store.claim(message, "host:2:b", ttl=5)[:2] == ("held", "host:9:other")


def test_a_run_whose_pool_ended_meanwhile_brings_none_of_its_keys_back(store, redis_server):
    message = message_of_a_live_pool(store)
    pool_id = pool_of(message)
    ending[:] = [store]
    run_first_delivery(TaskRunner(store, KEY, claim_ttl=30, flags_redeliveries=True),
                       message, end_my_pool, pool_id)
    assert redis.Redis.from_url(redis_server.url(5)).keys(f"distpool:*{pool_id}*") == []


def test_results_are_pushed_when_whether_the_claim_reached_redis_is_unknown(store, monkeypatch):
    # Its connection failed: the claim may never have been made, and the run was this one's.
    message = message_of_a_live_pool(store)

    def lost(*_: Any) -> Callable[[], Any]:
        def reply() -> Any:
            raise RedisConnectionError("connection lost")
        return reply

    monkeypatch.setattr(store, "claim_soon", lost)
    run_first_delivery(TaskRunner(store, KEY, claim_ttl=30, flags_redeliveries=True),
                       message, len, "abc")
    [raw] = store.pop_results(pool_of(message), 5)
    record = ResultRecord.from_bytes(raw, KEY, pool_of(message))
    assert record.ok and serialization.loads(record.payload) == 3
    assert store.claim(message, "host:2:b", ttl=5).outcome == "done"
