"""``distpool checkpoints``: the journals of named runs, listed and removed."""

from __future__ import annotations

from distpool import cli
from distpool.client.journal import Journal


def test_the_journals_are_listed_with_their_state_and_one_is_removed(tmp_path, capsys):
    with Journal.open(str(tmp_path / "w47")) as finished:
        finished.append(b"a record")
        finished.finish()
    with Journal.open(str(tmp_path / "w48")) as unfinished:
        unfinished.append(b"a record")
        unfinished.append(b"another")
        unfinished.flush()
        assert cli.main(["checkpoints", "--dir", str(tmp_path)]) == 0
        listed = capsys.readouterr().out.splitlines()
        assert listed[0].startswith("w47  1 records") and "finished" in listed[0]
        assert listed[1].startswith("w48  2 records") and "held by" in listed[1]
    assert cli.main(["checkpoints", "--dir", str(tmp_path)]) == 0
    assert "resumable" in capsys.readouterr().out.splitlines()[1]
    assert cli.main(["checkpoints", "rm", "w48", "--dir", str(tmp_path)]) == 0
    assert cli.main(["checkpoints", "--dir", str(tmp_path)]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["w47"]


def test_removing_what_is_not_there_or_nothing_says_so(tmp_path, capsys):
    assert cli.main(["checkpoints", "rm", "w49", "--dir", str(tmp_path)]) == 1
    assert "distpool checkpoints rm: no run journal" in capsys.readouterr().err
    assert cli.main(["checkpoints", "rm", "--dir", str(tmp_path)]) == 2
    assert "name the run to remove" in capsys.readouterr().err
