"""Which slot state directories a starting node removes (distpool.worker.slots.state,
Leftovers)."""

from __future__ import annotations

import subprocess
import sys

from distpool.worker.slots import state

#: Makes a state directory in the temporary directory given, prints it, and holds it until
#: its stdin closes: a live node's.
HOLD = ("import sys, tempfile; tempfile.tempdir = sys.argv[1]; "
        "from distpool.worker.slots import state; "
        "d = state.StateDirectory(); print(d.path, flush=True); sys.stdin.read()")


def state_directory(parent, name, owner=None):
    path = parent / f"{state.DIRECTORY_PREFIX}{name}"
    path.mkdir()
    (path / "slot-0").write_text("")
    if owner is not None:
        (path / state.OWNER_FILE).write_text(owner)
    return path


def test_only_directories_whose_parent_is_gone_are_removed(tmp_path):
    gone = state_directory(tmp_path, "gone", owner="4242\n")  # unlocked: its parent died
    older = state_directory(tmp_path, "older")  # no owner file: an older distpool's
    new = state_directory(tmp_path, "new", owner="")  # its parent is between open and lock
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        live = holder.stdout.readline().strip()
        assert state.remove_leftovers(str(tmp_path)) == [str(gone)]
        assert not gone.exists() and older.exists() and new.exists()
        assert (tmp_path / live / state.OWNER_FILE).exists()
    finally:
        holder.stdin.close()
        holder.wait(30)
        holder.stdout.close()


def test_a_node_never_removes_its_own_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(state.tempfile, "tempdir", str(tmp_path))
    own = state.StateDirectory()
    try:
        assert state.remove_leftovers() == []
        assert (tmp_path / own.path / state.OWNER_FILE).exists()
    finally:
        own.remove()
    assert not (tmp_path / own.path).exists()
