"""The state file through which a slot tells its parent what it runs."""

from __future__ import annotations

import time

import pytest

from distpool.worker.slots.state import RECORD_SIZE, Running, SlotState


def test_the_parent_reads_what_the_slot_wrote_last(tmp_path):
    slot = SlotState(str(tmp_path / "slot"), holder="host:123:abcd")
    parent = SlotState(slot.path)
    assert parent.read() is None  # no file yet
    assert parent.read_holder() is None
    slot.running("a-long-message-id-0123456789", "tag-1", 1700000000.25)
    assert parent.read() == Running("a-long-message-id-0123456789", "tag-1", 1700000000.25)
    slot.running("m2", "tag-2", None)  # shorter: nothing of the longer one may remain
    assert parent.read() == Running("m2", "tag-2", None)
    assert parent.read_holder() == "host:123:abcd"
    slot.idle()
    assert parent.read() is None
    assert parent.read_holder() == "host:123:abcd"  # idle, it may still hold a message


def test_a_garbled_file_reads_as_holding_nothing(tmp_path):
    path = tmp_path / "slot"
    for garbage in (b"one-field", b"holder id tag not-a-number", b"\xff\xfe holder id tag 0"):
        path.write_bytes(garbage)
        assert SlotState(str(path)).read() is None


def test_a_state_that_would_not_fit_is_refused(tmp_path):
    with pytest.raises(ValueError, match="too long"):
        SlotState(str(tmp_path / "slot"), "h").running("x" * RECORD_SIZE, "tag", None)


def test_a_running_state_says_since_when(tmp_path):
    slot = SlotState(str(tmp_path / "slot"), holder="h")
    before = time.time()
    slot.running("m1", "tag-1", None)
    running = SlotState(slot.path).read()
    assert running is not None and before - 0.001 <= running.since <= time.time() + 0.001
    (tmp_path / "old").write_bytes(b"h m1 tag-1 0".ljust(RECORD_SIZE))  # no start: still read
    assert SlotState(str(tmp_path / "old")).read() == Running("m1", "tag-1", None)
