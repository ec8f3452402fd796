"""Node records as ``distpool status`` reads them (distpool.store.nodes), without Redis."""

from __future__ import annotations

import json

from distpool.store.nodes import _pairs, read_nodes

NOW = 1_800_000_000.0


def record(*states, host="host-a", pid=42):
    slots = []
    for index, state in enumerate(states):
        busy = state == "busy"
        slots.append({"index": index, "name": f"n-{index}@host-a",
                      "pid": None if state == "restarting" else 100 + index, "state": state,
                      "message": f"pool:0:{index}" if busy else None,
                      "since": NOW - 3 if busy else None})
    return json.dumps({"host": host, "pid": pid, "started": NOW - 60, "slots": slots}).encode()


def test_a_node_counts_its_slots_busy_and_registered_ones():
    [node] = read_nodes(NOW, {"n@host-a": NOW + 10},
                        {"n@host-a": record("busy", "idle", "busy", "restarting")},
                        {"n-0@host-a", "n-1@host-a", "n-2@host-a"})
    assert (node["name"], node["host"], node["pid"], node["kind"]) == ("n@host-a", "host-a", 42,
                                                                        "slots")
    assert (node["slots"], node["busy"], node["registered"]) == (4, 2, 3)
    assert node["alive"] and node["lapsed_for"] is None
    first, _, _, last = node["slot_detail"]
    assert first == {"index": 0, "name": "n-0@host-a", "pid": 100, "state": "busy",
                     "message": "pool:0:0", "since": NOW - 3, "running_for": 3.0,
                     "registered": True}
    assert (last["pid"], last["state"], last["registered"]) == (None, "restarting", False)


def test_a_node_whose_record_expired_is_listed_as_lapsed():
    [node] = read_nodes(NOW, {"n@host-a": NOW - 42.04}, {"n@host-a": record("idle")}, set())
    assert not node["alive"] and node["lapsed_for"] == 42.0


def test_records_that_a_parent_did_not_write_are_skipped():
    good = record("idle")
    hostile = {
        "not-json": b"\xff{",
        "deep": b"[" * 100_000,
        "a-list": b"[1, 2]",
        "no-host": json.dumps({"pid": 1, "started": 0, "slots": []}).encode(),
        "bad-state": record("idle").replace(b'"idle"', b'"dancing"'),
        "bad-slot": json.dumps({"host": "h", "pid": 1, "started": 0, "slots": [7]}).encode(),
        "bool-pid": json.dumps({"host": "h", "pid": True, "started": 0, "slots": []}).encode(),
        "no-expiry": good,
    }
    expiries = {name: NOW + 10 for name in hostile if name != "no-expiry"}
    nodes = read_nodes(NOW, {**expiries, "fine": NOW + 10}, {**hostile, "fine": good}, set())
    assert [node["name"] for node in nodes] == ["fine"]


def test_replies_read_as_pairs_in_either_protocol():
    assert _pairs({b"a": b"1"}) == [(b"a", b"1")]  # RESP3 map
    assert _pairs([[b"a", 1.5]]) == [(b"a", 1.5)]  # RESP3 scored members
    assert _pairs([b"a", b"1.5", b"b", b"2"]) == [(b"a", b"1.5"), (b"b", b"2")]  # RESP2
    assert _pairs([]) == []
