"""``distpool status`` as text (one line per node, per slot with --slots) and its exit
status, over a stand-in cluster_status."""

from __future__ import annotations

import json

import pytest

import distpool.status
from distpool import cli


def slot(index, state="idle", registered=True):
    busy = state == "busy"
    return {"index": index, "name": f"a-{index}@h1", "pid": None if state == "restarting"
            else 200 + index, "state": state, "message": f"p1:0:{index}" if busy else None,
            "since": 1.0 if busy else None, "running_for": 12.5 if busy else None,
            "registered": registered}


def node(name, alive=True, kind="slots", slots=(), busy=0, registered=None, count=None):
    return {"name": name, "host": name.partition("@")[2], "pid": 7 if kind == "slots" else None,
            "kind": kind, "alive": alive, "lapsed_for": None if alive else 42.0,
            "started": 1.0, "slots": len(slots) if count is None else count,
            "busy": busy, "registered": len(slots) if registered is None else registered,
            "slot_detail": list(slots)}


STATUS = {
    "broker": "redis://127.0.0.1:6379/0", "queue": "q", "queue_depth": 3,
    "nodes": [
        node("a@h1", slots=[slot(0, "busy"), slot(1), slot(2, "restarting", False)], busy=1,
             registered=2),
        node("b@h2", alive=False, slots=[slot(0)]),
        node("c@h3", kind="celery", busy=None, count=8),
    ],
    "pools": [{"id": "p1" * 16, "host": "client", "pid": 9, "processes": 4, "started": 1.0,
               "sent": 10, "done": 4, "in_flight": 6}],
}


@pytest.fixture
def status(monkeypatch):
    def run(*args, report=STATUS):
        monkeypatch.setattr(distpool.status, "cluster_status", lambda settings, timeout: report)
        return cli.main(["status", "--broker", "redis://127.0.0.1:6379/0", *args])

    return run


def test_one_line_per_node_with_its_slots_and_busy_ones(status, capsys):
    assert status() == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "broker redis://127.0.0.1:6379/0, queue q: 3 message(s) waiting"
    assert out[1] == ("nodes: 2 alive of 3, 11 slots, 1 busy (not known for 1 node(s) run "
                      "with a Celery pool)")
    a, b, c = out[2:5]
    assert a.split() == ["a@h1", "h1", "slots", "3", "busy", "1", "(1", "not", "consuming)"]
    assert b.split()[-4:] == ["lapsed", "42", "s", "ago"]
    assert c.split()[3:] == ["8", "busy", "?", "(Celery", "pool)"]
    assert out[5] == "pools with work in flight: 1"
    assert "done 4 of 10 sent, 6 in flight" in out[6]
    assert not any(line.strip().startswith("slot ") for line in out)


def test_slots_shows_each_slot_under_its_node(status, capsys):
    assert status("--slots") == 0
    out = capsys.readouterr().out.splitlines()
    busy, idle, restarting = (line.split() for line in out[3:6])
    assert busy == ["slot", "0", "pid", "200", "busy", "p1:0:0", "for", "12.5", "s"]
    assert idle == ["slot", "1", "pid", "201", "idle"]
    assert restarting == ["slot", "2", "pid", "-", "restarting"]


def test_json_is_the_report_itself(status, capsys):
    assert status("--json") == 0
    assert json.loads(capsys.readouterr().out) == STATUS


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_no_node_alive_exits_1(status, capsys, args):
    lapsed = {**STATUS, "nodes": [node("b@h2", alive=False, slots=[slot(0)])]}
    assert status(*args, report=lapsed) == 1


def test_an_unreachable_cluster_exits_2(monkeypatch, capsys):
    def fail(settings, timeout):
        raise ConnectionError("refused")

    monkeypatch.setattr(distpool.status, "cluster_status", fail)
    assert cli.main(["status", "--broker", "redis://127.0.0.1:1/0"]) == 2
    assert "cannot reach the cluster: refused" in capsys.readouterr().err
