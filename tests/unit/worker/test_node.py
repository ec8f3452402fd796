"""How a worker node chooses its process model (distpool.worker.node), and what ``distpool
worker`` hands it, without starting one."""

from __future__ import annotations

import logging

import pytest
from celery.utils.imports import symbol_by_name

from distpool import cli, platform
from distpool.config import DEFAULT_STOP_TIMEOUT, resolve
from distpool.errors import DistpoolError, SecretKeyMissingError
from distpool.worker import node
from distpool.worker.app import _warn_unenforced
from distpool.worker.prefork import PreforkPool


def settings(secret="k" * 32):
    return resolve(broker="redis://127.0.0.1:6379/0", secret=secret, environ={})


class Calls:
    """Stands in for the two process models: records how the node ran."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(node, "run_slots", self.record("slots"))
        monkeypatch.setattr(node, "run_worker", self.record("celery"))
        monkeypatch.setattr(node, "_require_redis", lambda settings: None)  # (no Redis here)

    def record(self, model):
        def run(*args, **kwargs):
            self.calls.append((model, args, kwargs))
            return 0
        return run


@pytest.mark.parametrize("pool", [None, "solo"])
def test_a_node_runs_slots_by_default_and_for_solo(monkeypatch, pool):
    calls = Calls(monkeypatch)
    assert node.run(settings(), concurrency=3, name="n@h", loglevel="INFO",
                    extra_args=["-E"], pool=pool, stop_timeout=5.0) == 0
    assert calls.calls == [("slots", (settings(), 3, "n@h", "INFO", ["-E"], 5.0), {})]


@pytest.mark.parametrize("pool", ["prefork", "processes"])
def test_prefork_runs_distpool_s_prefork_pool(monkeypatch, pool):
    calls = Calls(monkeypatch)
    node.run(settings(), concurrency=2, name="n@h", extra_args=["-E"], pool=pool)
    [(model, args, kwargs)] = calls.calls
    assert (model, args) == ("celery", (settings(), 2, "n@h", "WARNING", ["-E"]))
    # by the setting: Celery's --pool takes only its own pools' names
    assert symbol_by_name(kwargs["app"].conf.worker_pool) is PreforkPool
    assert kwargs["app"].distpool_enforces_time_limits


@pytest.mark.parametrize(("pool", "enforced"), [("threads", False), ("gevent", True)])
def test_another_pool_runs_celery_s_own_worker(monkeypatch, pool, enforced):
    calls = Calls(monkeypatch)
    node.run(settings(), concurrency=2, name="n@h", extra_args=["-E"], pool=pool)
    [(model, args, kwargs)] = calls.calls
    assert (model, args) == ("celery", (settings(), 2, "n@h", "WARNING", [f"--pool={pool}",
                                                                          "-E"]))
    assert kwargs["app"].distpool_enforces_time_limits is enforced


def test_prefork_is_refused_on_windows_with_the_reason(monkeypatch):
    calls = Calls(monkeypatch)
    monkeypatch.setattr(platform, "windows", True)
    with pytest.raises(DistpoolError, match="--pool prefork does not run on Windows: .*fork"):
        node.run(settings(), concurrency=2, pool="prefork")
    assert calls.calls == []
    node.run(settings(), concurrency=2, pool="threads")  # the others run there
    assert [model for model, _, _ in calls.calls] == ["celery"]


def test_a_threads_worker_warns_once_per_pool_that_its_time_limit_is_not_enforced(caplog):
    caplog.set_level(logging.WARNING, logger="distpool")
    warned = set()
    for pool_id in ("p1", "p1", "p2", "p1"):
        _warn_unenforced(warned, pool_id)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "pool p1 sets a task_timeout" in lines[0]
    assert "threads pool cannot stop a thread" in lines[0] and "pool p2" in lines[1]


def test_a_node_without_a_key_starts_nothing(monkeypatch):
    calls = Calls(monkeypatch)
    with pytest.raises(SecretKeyMissingError):
        node.run(settings(secret=None), concurrency=1)
    assert calls.calls == []


def test_a_node_is_named_after_its_process_by_default(monkeypatch):
    calls = Calls(monkeypatch)
    node.run(settings(), concurrency=1)
    (_, (_, _, name, *_), _), = calls.calls
    assert name.startswith("distpool-") and name.endswith("@%h")


def test_distpool_worker_hands_its_options_to_the_node(monkeypatch):
    runs = []
    monkeypatch.setattr(node, "run", lambda settings, **kwargs: runs.append(kwargs) or 0)
    for name in ("DISTPOOL_SECRET", "DISTPOOL_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["worker", "--insecure", "-c", "3", "-n", "x@h", "-l", "info",
                     "-P", "prefork", "-E", "--max-tasks-per-child", "5"]) == 0
    assert cli.main(["worker", "--insecure", "-c", "1", "--pool=solo",
                     "--stop-timeout", "90"]) == 0
    assert runs == [
        {"concurrency": 3, "name": "x@h", "loglevel": "INFO", "pool": "prefork",
         "extra_args": ["-E", "--max-tasks-per-child", "5"],
         "stop_timeout": DEFAULT_STOP_TIMEOUT},
        {"concurrency": 1, "name": None, "loglevel": "WARNING", "pool": "solo",
         "extra_args": [], "stop_timeout": 90.0}]


def test_distpool_worker_says_why_it_cannot_run_here(monkeypatch, capsys):
    def refuse(settings, **_):
        raise DistpoolError("--pool prefork does not run on Windows")

    monkeypatch.setattr(node, "run", refuse)
    assert cli.main(["worker", "--insecure", "-P", "prefork"]) == 2
    assert "distpool worker: --pool prefork does not run on Windows" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["worker", "--insecure", "--stop-timeout", "-1"])
    assert "--stop-timeout: must be a number of seconds" in capsys.readouterr().err
