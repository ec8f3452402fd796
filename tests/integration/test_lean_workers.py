"""Lean workers: an idle slot is quiet (no heartbeats unless events are asked for, long waits
on the queue), and a slot shares what its parent imported, so that hundreds of slots neither
keep Redis busy nor hold a copy each of Celery."""

from __future__ import annotations

import os
import sys
import threading
import time

import psutil
import pytest
from celery import Celery

import distpool
from tests.support import RedisServer, Worker, wait_for_slots

pytestmark = pytest.mark.integration


def commands_while_idle(redis_server, seconds):
    """Calls of each command Redis served over ``seconds``."""
    before = redis_server.client.info("commandstats")
    time.sleep(seconds)
    after = redis_server.client.info("commandstats")
    return {name[len("cmdstat_"):]: stats["calls"] - before.get(name, {"calls": 0})["calls"]
            for name, stats in after.items()}


@pytest.fixture
def own_redis():
    """A Redis that this test's worker alone uses: its commands are all the worker's."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.mark.parametrize("events", [False, True])
def test_an_idle_slot_sends_heartbeats_only_when_events_are_asked_for(own_redis, events):
    worker = Worker(own_redis.url(), "idle", 1, extra_args=["-E"] if events else [],
                    secret="the key")
    try:
        wait_for_slots(own_redis.url(), "idle", 1, [worker])
        time.sleep(1)  # past its start
        calls = commands_while_idle(own_redis, 6.5)
    finally:
        worker.stop()
    # Celery publishes a heartbeat event every 2 s; on Redis an event is a PUBLISH.
    assert (calls.get("publish", 0) >= 2) is events
    assert calls.get("blmove", 0) <= 2  # one wait of up to 5 s at a time, not one a second


def test_idle_slots_send_few_commands_and_take_turns_sweeping(own_redis):
    """At most 1.5 commands per idle slot per second; the sweep for a dead consumer's
    messages (kombu's mutex, then a ZRANGE of the held messages) is done by one slot of
    the node at a time, not by every slot each hold renewal interval."""
    worker = Worker(own_redis.url(), "quiet", 4, secret="the key")
    try:
        wait_for_slots(own_redis.url(), "quiet", 4, [worker])
        time.sleep(3)  # past their start (each sweeps once as it connects)
        seconds = 14  # two hold renewal intervals (7 s at the default timeout of 30 s)
        calls = commands_while_idle(own_redis, seconds)
    finally:
        worker.stop()
    calls.pop("info", None)  # the test's own
    assert sum(calls.values()) / 4 / seconds <= 1.5, calls
    assert calls.get("zrange", 0) <= 3, calls  # every slot each 7 s would make 8


def test_a_worker_stops_without_waiting_out_its_idle_wait(own_redis):
    worker = Worker(own_redis.url(), "stop", 2, secret="the key")
    wait_for_slots(own_redis.url(), "stop", 2, [worker])
    time.sleep(1)
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 4  # a wait cut short, not one of up to 5 s awaited
    assert not own_redis.client.keys("distpool:held:*")  # nothing left held


def test_a_forked_slot_imports_almost_nothing_of_its_own(redis_server):
    """The parent imports what a slot's Celery worker needs before it forks, so slots share
    those pages (about 290 modules, prompt_toolkit's among them, were each slot's own)."""
    worker = Worker(redis_server.url(), "lean", 2, secret="the key")
    try:
        wait_for_slots(redis_server.url(), "lean", 2, [worker])
        deadline = time.monotonic() + 10
        while worker.log().count("having imported") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        counts = [int(line.split("having imported ")[1].split()[0])
                  for line in worker.log().splitlines() if "having imported" in line]
    finally:
        worker.stop()
    assert len(counts) == 2 and max(counts) < 30, counts


def connections_to(port, pid):
    try:
        return sum(1 for c in psutil.Process(pid).net_connections("tcp")
                   if c.raddr and c.raddr.port == port)
    except psutil.NoSuchProcess:
        return 0


def test_a_slot_holds_at_most_five_redis_connections_at_any_moment(own_redis):
    """Its task consumer's blocking wait, its remote control's subscription, one connection
    for the commands of both (replies to remote control included), its delivery records'
    and the result store's: sampled while it runs tasks and answers inspect."""
    worker = Worker(own_redis.url(), "budget", 2, secret="the key")
    most: dict[int, int] = {}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            try:
                slots = psutil.Process(worker.process.pid).children()
            except psutil.NoSuchProcess:
                return
            for slot in slots:
                held = connections_to(own_redis.port, slot.pid)
                most[slot.pid] = max(most.get(slot.pid, 0), held)

    try:
        wait_for_slots(own_redis.url(), "budget", 2, [worker])
        sampler = threading.Thread(target=sample)
        sampler.start()
        control = Celery(broker=own_redis.url()).control
        with distpool.Pool(2, broker=own_redis.url(), queue="budget", secret="the key") as pool:
            pending = pool.map_async(time.sleep, [0.01] * 200, chunksize=1)
            for _ in range(3):
                assert len(control.inspect(timeout=1).active() or {}) == 2
            pending.get(timeout=60)
        time.sleep(1)  # and once it is idle again
    finally:
        stop.set()
        worker.stop()
    assert len(most) == 2 and max(most.values()) <= 5, most


def sockets_of(pid):
    """The sockets process ``pid`` has open (their inodes)."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def die_running():
    os._exit(3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_slot_keeps_a_copy_of_its_parent_s_connections(own_redis):
    """The parent holds connections of its own (its node record; the recovery of a dead
    slot's message) while it forks replacements: a forked slot would keep a copy of each."""
    worker = Worker(own_redis.url(), "inherit", 2, secret="the key")
    try:
        wait_for_slots(own_redis.url(), "inherit", 2, [worker])
        with distpool.Pool(2, broker=own_redis.url(), queue="inherit", secret="the key",
                           task_timeout=None) as pool:
            pool.apply_async(die_running)  # its slot dies running it: the parent requeues
            time.sleep(3)  # replaced, and the parent has published its record meanwhile
            parent = psutil.Process(worker.process.pid)
            assert sockets_of(parent.pid), "the parent holds no connection: nothing to test"
            slots = parent.children()
            assert len(slots) == 2
            for slot in slots:
                assert not sockets_of(slot.pid) & sockets_of(parent.pid), slot.pid
            pool.terminate()
    finally:
        worker.stop()
