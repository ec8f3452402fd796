"""Who runs a message delivered twice: the claims of distpool.worker.claims, against a real
Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from distpool.store.keys import pool_of
from distpool.worker.claims import Claims, Renewal
from tests.support import message_of_a_live_pool

pytestmark = pytest.mark.integration


def a_holder():
    """The claims' holder of another worker process (of this one, which lives)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_message_claimed_by_a_process_of_this_host_that_died_is_taken_over_at_once(store):
    message = message_of_a_live_pool(store)
    gone = f"{socket.gethostname()}:{dead_pid()}:x"
    assert store.claim(message, gone, ttl=60).outcome == "claimed"
    claims = Claims(store, ttl=60, holder=a_holder())
    started = time.monotonic()
    assert claims.acquire(message) == (gone,)  # an interrupted run: another attempt
    assert time.monotonic() - started < 1


def test_a_message_whose_holder_keeps_renewing_is_left_to_it(store):
    message = message_of_a_live_pool(store)
    holder = Claims(store, ttl=1.5, holder=a_holder())
    assert holder.acquire(message) == (None,)  # a first run
    stop = threading.Event()

    def renew():
        while not stop.wait(holder.renew_interval):
            assert holder.renew(message) is Renewal.OURS

    renewer = threading.Thread(target=renew)
    renewer.start()
    try:
        started = time.monotonic()
        assert Claims(store, ttl=1.5, holder=a_holder()).acquire(message) is None
        assert time.monotonic() - started < 2  # decided once it saw a renewal
    finally:
        stop.set()
        renewer.join()


def test_a_message_whose_holder_elsewhere_stopped_renewing_is_taken_once_it_lapses(store):
    message = message_of_a_live_pool(store)
    assert store.claim(message, "another-host:123:x", ttl=0.8).outcome == "claimed"
    claims = Claims(store, ttl=5, holder=a_holder())
    assert claims.acquire(message) == ("another-host:123:x",)
    other = Claims(store, ttl=5, holder=a_holder())
    assert other.renew(message) is Renewal.TAKEN  # nobody else's succeeds
    assert claims.renew(message) is Renewal.OURS


def test_a_finished_message_is_not_run_again(store):
    message = message_of_a_live_pool(store)
    claims = Claims(store, ttl=5, holder=a_holder())
    assert claims.acquire(message)
    store.finish(message)
    assert Claims(store, ttl=5, holder=a_holder()).acquire(message) is None
    assert claims.renew(message) is Renewal.DONE  # its first holder learns it too


def test_this_process_counts_as_alive(store):
    message = message_of_a_live_pool(store)
    assert store.claim(message, f"{socket.gethostname()}:{os.getpid()}:x",
                       ttl=0.6).outcome == "claimed"
    started = time.monotonic()
    assert Claims(store, ttl=5, holder=a_holder()).acquire(message)  # only after the claim lapsed
    assert time.monotonic() - started >= 0.4


def test_a_second_delivery_of_what_this_process_runs_is_not_run_again(store):
    message = message_of_a_live_pool(store)
    claims = Claims(store, ttl=5, holder=a_holder())
    assert claims.acquire(message) == (None,)
    started = time.monotonic()
    assert claims.acquire(message) is None  # at once: no waiting on its own renewals
    assert time.monotonic() - started < 0.5
    assert claims.renew(message) is Renewal.OURS  # while the run itself renews


def test_a_claim_of_this_process_that_lapsed_is_taken_as_an_interrupted_run(store):
    message = message_of_a_live_pool(store)
    claims = Claims(store, ttl=0.3, holder=a_holder())
    assert claims.acquire(message) == (None,)
    time.sleep(0.4)  # its run stopped renewing
    assert claims.acquire(message) == (claims.holder,)


def test_a_message_of_a_pool_that_ended_is_not_run_and_its_holder_runs_on(store):
    message = message_of_a_live_pool(store)
    claims = Claims(store, ttl=5, holder=a_holder())
    assert claims.acquire(message) == (None,)
    store.close_pool(pool_of(message))
    other = Claims(store, ttl=5, holder=a_holder())
    assert other.acquire(message) is None  # at once: nothing to wait for
    assert claims.renew(message) is Renewal.OURS  # the pool's end is the watchdog's to see
