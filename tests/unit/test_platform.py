"""distpool.platform: the one place where platforms differ, on real processes of this
machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from distpool import cli, platform

# A parent that starts a child and a grandchild, prints their pids, and waits.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_process_that_ended_is_gone_and_a_running_one_exists():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert platform.process_exists(os.getpid())
    assert not platform.process_exists(process.pid)


def test_a_process_tree_ends_whole_and_at_once():
    root = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True,
                            **platform.new_process_group())
    try:
        grandchild = int(root.stdout.readline())
        started = time.monotonic()
        platform.end_process_tree(root.pid, timeout=5.0)
        assert time.monotonic() - started < 5.0
        root.wait(5)
        assert not platform.process_exists(grandchild)
    finally:
        root.kill()
        root.wait()
        root.stdout.close()


@pytest.mark.skipif(sys.platform == "win32", reason="zombies are POSIX's")
def test_a_killed_process_that_its_parent_has_not_reaped_counts_as_ended():
    # As a killed node's slots: zombies, not this process's children, left to be reaped by
    # their parent (here one that never does) or init. The wait must not last its timeout.
    root = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True,
                            **platform.new_process_group())
    try:
        child = int(root.stdout.readline())
        started = time.monotonic()
        platform.end_process_tree(child, timeout=10.0)
        assert time.monotonic() - started < 3.0
        assert not platform.process_exists(child)  # a zombie
    finally:
        root.kill()
        root.wait()
        root.stdout.close()


def test_a_tree_that_is_gone_already_is_no_error():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    platform.end_process_tree(process.pid, timeout=0.1)


@pytest.mark.parametrize("windows", [False, True])
def test_a_sliced_wait_ends_as_the_wait_and_at_its_timeout(monkeypatch, windows):
    monkeypatch.setattr(platform, "windows", windows)
    event = threading.Event()
    started = time.monotonic()
    assert platform.waited(event.wait, 0.6) is False
    assert 0.55 <= time.monotonic() - started < 3
    threading.Timer(0.4, event.set).start()
    assert platform.waited(event.wait, None) is True
    thread = threading.Thread(target=time.sleep, args=(0.3,))
    thread.start()
    assert platform.joined(thread) is True and not thread.is_alive()


def test_only_windows_before_3_14_needs_sliced_waits(monkeypatch):
    monkeypatch.setattr(platform, "windows", False)
    assert platform.interruptible_waits()
    monkeypatch.setattr(platform, "windows", True)
    assert platform.interruptible_waits() is (sys.version_info >= (3, 14))


def test_the_stop_signals_are_sigterm_and_on_windows_sigbreak():
    expected = [signal.SIGTERM] + ([signal.SIGBREAK] if sys.platform == "win32" else [])
    assert platform.stop_signals() == expected


def test_a_directory_is_private_only_if_this_user_s_alone(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert platform.private_to_this_user(os.lstat(private))
    if sys.platform != "win32":  # (there %TEMP% is per user, and st_mode says nothing)
        os.chmod(private, 0o755)
        assert not platform.private_to_this_user(os.lstat(private))
    assert platform.this_user()


@pytest.mark.parametrize(("windows", "expected"), [
    (False, ["export DISTPOOL_BROKER_URL=redis://h:1/0 DISTPOOL_SECRET_FILE=/s"]),
    (True, ["set DISTPOOL_BROKER_URL=redis://h:1/0 & set DISTPOOL_SECRET_FILE=/s   (cmd)",
            '$env:DISTPOOL_BROKER_URL="redis://h:1/0"; $env:DISTPOOL_SECRET_FILE="/s"'
            "   (PowerShell)"]),
])
def test_distpool_cluster_prints_the_settings_for_this_platform_s_shells(
        monkeypatch, windows, expected):
    monkeypatch.setattr(platform, "windows", windows)
    assert cli.setting_lines({"DISTPOOL_BROKER_URL": "redis://h:1/0",
                              "DISTPOOL_SECRET_FILE": "/s"}) == expected
