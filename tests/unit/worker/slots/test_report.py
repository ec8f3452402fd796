"""The node record the slot parent publishes (distpool.worker.slots.report): when it
publishes, what it says of each slot, and what it does when the store is away."""

from __future__ import annotations

import logging

from distpool.config import resolve
from distpool.worker.slots.parent import _Slot, slot_report
from distpool.worker.slots.report import (
    CHANGE_INTERVAL,
    PUBLISH_INTERVAL,
    RECORD_TTL,
    NodeReport,
    SlotReport,
)
from distpool.worker.slots.restarts import Backoff
from distpool.worker.slots.state import Running, SlotState


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class StandInRecords:
    def __init__(self):
        self.published = []
        self.removed = []
        self.closed = False
        self.failing = False

    def publish(self, queue, name, record, ttl):
        if self.failing:
            raise ConnectionError("Redis is away")
        self.published.append((queue, name, record, ttl))

    def remove(self, queue, name):
        self.removed.append((queue, name))

    def close(self):
        self.closed = True


def reporter(records, clock):
    settings = resolve(broker="redis://127.0.0.1:1/0", queue="q")
    return NodeReport(settings, "n@host", records=lambda: records, clock=clock)


IDLE = [SlotReport(0, "n-0@host", 100, "idle"), SlotReport(1, "n-1@host", 101, "idle")]
BUSY = [SlotReport(0, "n-0@host", 100, "busy", "p:0:0", 1.5), IDLE[1]]


def test_the_record_is_published_at_once_then_on_change_and_renewed_when_due():
    records, clock = StandInRecords(), Clock()
    report = reporter(records, clock)
    report.update(IDLE)
    [(queue, name, record, ttl)] = records.published
    assert (queue, name, ttl) == ("q", "n@host", RECORD_TTL)
    assert set(record) == {"host", "pid", "started", "slots"}
    assert record["slots"][0] == {"index": 0, "name": "n-0@host", "pid": 100, "state": "idle",
                                  "message": None, "since": None}
    clock.now += CHANGE_INTERVAL / 2
    report.update(BUSY)  # a change, but too soon after the last publish
    assert len(records.published) == 1
    clock.now += CHANGE_INTERVAL / 2
    report.update(BUSY)
    assert len(records.published) == 2 and records.published[-1][2]["slots"][0]["state"] == "busy"
    clock.now += PUBLISH_INTERVAL - 0.1
    report.update(BUSY)  # unchanged: only renewed when due
    assert len(records.published) == 2
    clock.now += 0.1
    report.update(BUSY)
    assert len(records.published) == 3
    report.close()
    assert records.removed == [("q", "n@host")] and records.closed


def test_a_store_that_is_away_is_tried_again_only_when_due_and_logged_once(caplog):
    records, clock = StandInRecords(), Clock()
    report = reporter(records, clock)
    records.failing = True
    with caplog.at_level(logging.WARNING, logger="distpool"):
        report.update(IDLE)
        for _ in range(3):
            clock.now += CHANGE_INTERVAL
            report.update(BUSY if _ % 2 else IDLE)  # changes: not tried before it is due
        clock.now += PUBLISH_INTERVAL
        report.update(IDLE)
        records.failing = False
        clock.now += PUBLISH_INTERVAL
        report.update(IDLE)
    assert len(records.published) == 1
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if "could not publish" in m]) == 1
    assert len([m for m in messages if "again" in m]) == 1


def test_a_node_that_never_published_removes_nothing_at_stop():
    records = StandInRecords()
    reporter(records, Clock()).close()
    assert records.removed == [] and not records.closed


def test_each_slot_is_reported_idle_busy_or_restarting(tmp_path):
    class Process:
        pid = 4321

    slot = _Slot(3, SlotState(str(tmp_path / "slot-3")), Backoff())
    assert slot_report(slot, "n-3@host") == SlotReport(3, "n-3@host", None, "restarting")
    slot.process = Process()  # type: ignore[assignment]
    assert slot_report(slot, "n-3@host") == SlotReport(3, "n-3@host", 4321, "idle")
    slot.running = Running("p:0:7", "tag", None, since=1234.5)
    assert slot_report(slot, "n-3@host") == SlotReport(3, "n-3@host", 4321, "busy", "p:0:7",
                                                       1234.5)
