"""The journal of a resumable named run: records survive the client's death, a torn or corrupt
tail is dropped, large records go through blobs, and one process at a time holds a run."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distpool.client import journal
from distpool.client.journal import Journal, journals, remove
from distpool.client.run_lock import JournalBusyError
from distpool.errors import DistpoolError

REPO = str(Path(__file__).resolve().parents[3])
HOLD = ("import sys\nfrom distpool.client.journal import Journal\n"
        "journal = Journal.open(sys.argv[1])\nprint('held', flush=True)\nsys.stdin.readline()")
TRY = ("import sys\nfrom distpool.client.journal import Journal\n"
       "from distpool.client.run_lock import JournalBusyError\n"
       "try:\n    Journal.open(sys.argv[1]).close()\n    print('opened')\n"
       "except JournalBusyError as error:\n    print(error.pid)")


def python(code, directory, **options):
    """A Python running ``code`` on the journal ``directory``, its output piped."""
    return subprocess.Popen([sys.executable, "-c", code, str(directory)], text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": REPO},
                            **options)


def records_file(directory):
    return directory / journal.RECORDS_FILE


def test_records_round_trip_across_close_and_open(tmp_path):
    with Journal.open(str(tmp_path / "run")) as first:
        assert (first.previous, first.finished) == ([], False)
        for record in (b"one", b"", b"three" * 100):
            first.append(record)
    with Journal.open(str(tmp_path / "run")) as second:
        assert second.previous == [b"one", b"", b"three" * 100]
        second.append(b"four")
    second.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        second.append(b"too late")
    with Journal.open(str(tmp_path / "run")) as third:
        assert third.previous == [b"one", b"", b"three" * 100, b"four"]


def test_a_torn_last_record_is_dropped_and_appends_follow_the_last_good_one(tmp_path, caplog):
    directory = tmp_path / "run"
    with Journal.open(str(directory)) as first:
        first.append(b"kept")
        first.append(b"torn by a crash")
    size = records_file(directory).stat().st_size
    os.truncate(records_file(directory), size - 3)
    with caplog.at_level(logging.WARNING, "distpool"), Journal.open(str(directory)) as second:
        assert second.previous == [b"kept"]
        second.append(b"after")
    assert "21 bytes of a torn or corrupt tail dropped" in caplog.text  # 8 + 1 + 15, less 3
    with Journal.open(str(directory)) as third:
        assert third.previous == [b"kept", b"after"]


def test_a_flipped_byte_in_the_last_record_is_caught_by_its_checksum(tmp_path):
    directory = tmp_path / "run"
    with Journal.open(str(directory)) as first:
        first.append(b"kept")
        first.append(b"flipped")
    data = bytearray(records_file(directory).read_bytes())
    data[-2] ^= 0x01
    records_file(directory).write_bytes(bytes(data))
    with Journal.open(str(directory)) as second:
        assert second.previous == [b"kept"]


def test_a_zeroed_tail_is_no_record(tmp_path):
    directory = tmp_path / "run"
    Journal.open(str(directory)).close()
    with open(records_file(directory), "ab") as file:
        file.write(bytes(4096))  # what a crash can leave past the end of what was synced
    with Journal.open(str(directory)) as second:
        assert second.previous == []


def test_a_foreign_file_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    records_file(tmp_path / "run").write_bytes(b"something else entirely")
    with pytest.raises(DistpoolError, match="not a run journal"):
        Journal.open(str(tmp_path / "run"))
    with pytest.raises(DistpoolError) as again:
        Journal.open(str(tmp_path / "run"))
    assert not isinstance(again.value, JournalBusyError)  # the first let the run go


def test_a_large_record_goes_through_a_blob_and_a_lost_blob_drops_only_its_record(
        tmp_path, caplog):
    directory = tmp_path / "run"
    large, other = os.urandom(journal.LARGE + 1), os.urandom(journal.LARGE * 2)
    with Journal.open(str(directory)) as first:
        first.append(b"small")
        first.append(large)
        first.append(other)
    blobs = sorted(path.name for path in (directory / journal.BLOBS).iterdir())
    assert len(blobs) == 2 and records_file(directory).stat().st_size < 200
    with Journal.open(str(directory)) as second:
        assert second.previous == [b"small", large, other]
    (directory / journal.BLOBS / hashlib.sha256(large).hexdigest()).unlink()
    with caplog.at_level(logging.WARNING, "distpool"), Journal.open(str(directory)) as third:
        assert third.previous == [b"small", other]
    assert "missing or corrupt" in caplog.text


def test_finish_restart(tmp_path):
    directory = str(tmp_path / "run")
    with Journal.open(directory) as first:
        first.append(b"a")
        first.append(os.urandom(journal.LARGE + 1))
        first.finish()
    with Journal.open(directory) as second:
        assert second.finished and len(second.previous) == 2
        second.restart()
        assert (second.previous, second.finished) == ([], False)
        assert not os.listdir(os.path.join(directory, journal.BLOBS))
        second.append(b"b")
    with Journal.open(directory) as third:
        assert (third.previous, third.finished) == ([b"b"], False)


def test_appends_reach_the_disk_within_a_group_commit_without_a_flush(tmp_path):
    directory = tmp_path / "run"
    with Journal.open(str(directory)) as held:
        held.append(b"group-committed")
        time.sleep(2 * journal.GROUP_COMMIT)
        assert b"group-committed" in records_file(directory).read_bytes()
        held.append(b"flushed")
        held.flush()
        assert b"flushed" in records_file(directory).read_bytes()


def test_a_process_killed_just_after_its_appends_loses_none_of_them(tmp_path):
    # Written at once, fsynced with the group: a SIGKILL within the group commit loses
    # nothing (a machine's crash may lose the group).
    appender = python("import os, signal, sys\nfrom distpool.client.journal import Journal\n"
                      "journal = Journal.open(sys.argv[1])\n"
                      "for n in range(100):\n    journal.append(b'record %d' % n)\n"
                      "os.kill(os.getpid(), signal.SIGKILL)", tmp_path / "run")
    appender.communicate(timeout=30)
    assert appender.returncode == -9
    with Journal.open(str(tmp_path / "run")) as again:
        assert again.previous == [b"record %d" % n for n in range(100)]


def test_a_process_killed_while_it_writes_a_large_record_loses_that_record_only(tmp_path):
    # The client dies while a large result's blob is being written: the blob is not one
    # (whole and durable only under its name), and what was appended before it holds.
    writer = python("import sys\nfrom distpool.client.journal import Journal\n"
                    "journal = Journal.open(sys.argv[1])\njournal.append(b'before')\n"
                    "print('writing', flush=True)\njournal.append(bytes(1 << 30))",
                    tmp_path / "run")
    try:
        assert writer.stdout.readline().strip() == "writing"
        blobs = tmp_path / "run" / journal.BLOBS
        deadline = time.monotonic() + 30
        while not any(blobs.iterdir()):  # the blob's temporary file, being written
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.001)
    finally:
        writer.kill()
        writer.communicate()
    with Journal.open(str(tmp_path / "run")) as again:
        assert again.previous == [b"before"]
        again.append(b"after")
    assert not any((tmp_path / "run" / journal.BLOBS).iterdir())  # the torn blob is gone
    with Journal.open(str(tmp_path / "run")) as last:
        assert last.previous == [b"before", b"after"]


def test_a_live_process_holds_the_run_and_its_death_lets_it_go(tmp_path):
    directory = tmp_path / "run"
    holder = python(HOLD, directory, stdin=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(JournalBusyError, match=f"process {holder.pid} on") as busy:
            Journal.open(str(directory))
        assert (busy.value.pid, busy.value.host) == (holder.pid, socket.gethostname())
        [info] = journals(str(tmp_path))
        assert info.holder == f"{socket.gethostname()}:{holder.pid}"
        with pytest.raises(JournalBusyError):
            remove(str(tmp_path), "run")
    finally:
        holder.kill()
        holder.wait()
    started = time.monotonic()
    with Journal.open(str(directory)) as taken:
        assert time.monotonic() - started < 0.5
        assert taken.previous == []


def test_one_journal_a_run_in_this_process_and_a_probe_keeps_its_lock(tmp_path):
    directory = tmp_path / "run"
    with Journal.open(str(directory)):
        with pytest.raises(JournalBusyError, match=f"process {os.getpid()} on"):
            Journal.open(str(directory))
        [info] = journals(str(tmp_path))  # closing a probe's descriptor would release a lock
        assert info.holder == f"{socket.gethostname()}:{os.getpid()}"
        other = python(TRY, directory)
        assert other.communicate(timeout=30)[0].strip() == str(os.getpid())


def test_journals_lists_the_runs_and_remove_removes_one(tmp_path):
    with Journal.open(str(tmp_path / "done")) as done:
        done.append(b"x" * 100)
        done.append(os.urandom(journal.LARGE + 1))
        done.finish()
    with Journal.open(str(tmp_path / "running")) as running:
        running.append(b"y")
        running.flush()
        (tmp_path / "not a journal").mkdir()
        before = time.time()
        listed = {info.name: info for info in journals(str(tmp_path))}
        assert set(listed) == {"done", "running"}
        assert (listed["done"].records, listed["done"].finished) == (2, True)
        assert listed["done"].size > journal.LARGE and listed["done"].holder is None
        assert listed["done"].modified <= before
        assert (listed["running"].records, listed["running"].finished) == (1, False)
        assert listed["running"].holder == f"{socket.gethostname()}:{os.getpid()}"
        with pytest.raises(JournalBusyError):
            remove(str(tmp_path), "running")
    remove(str(tmp_path), "done")
    assert not (tmp_path / "done").exists()
    assert [info.name for info in journals(str(tmp_path))] == ["running"]
    with pytest.raises(FileNotFoundError):
        remove(str(tmp_path), "done")
    assert journals(str(tmp_path / "nowhere")) == []


def test_a_hundred_thousand_appends_are_all_kept(tmp_path):
    # (What they cost the caller, benchmarks.resume measures.)
    record = os.urandom(200)
    with Journal.open(str(tmp_path / "run")) as held:
        for _ in range(100_000):
            held.append(record)
    with Journal.open(str(tmp_path / "run")) as again:
        assert len(again.previous) == 100_000
