"""A worker's side of shipped modules: the machine's cache, and one version of a module per
process. Bundles are fetched through a stand-in for the pool's blobs."""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import sys
import time

import pytest

from distpool.errors import DistpoolError, ModuleConflictError, VersionMismatchError
from distpool.wire import serialization
from distpool.wire.bundles import BundleRef, build
from distpool.wire.payload import Payload
from distpool.wire.versions import module_version
from distpool.worker import bundles, execute
from tests.projects import install, write_files
from tests.unit.worker.test_execute import envelope, outcome


class Blobs:
    """The pool's blobs: bundles by hash, and how often each was fetched (in a file, so
    that forked processes count too)."""

    def __init__(self, directory):
        self._directory = directory
        self._archives = {}

    def add(self, name, files):
        archive = Payload([build(files)])
        self._archives[archive.digest] = archive
        return BundleRef(name, archive.digest, archive.nbytes)

    def fetch(self, ref):
        with open(os.path.join(self._directory, "fetches"), "a") as log:
            log.write(ref.digest + "\n")
        return self._archives[ref.digest]

    def fetches(self):
        try:
            with open(os.path.join(self._directory, "fetches")) as log:
                return len(log.read().split())
        except FileNotFoundError:
            return 0


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A cache directory of the test's, and a process that has mounted nothing yet."""
    monkeypatch.setenv(bundles.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setattr(bundles, "_mounted", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield Blobs(str(tmp_path))
    for name in [name for name in sys.modules if name.partition(".")[0] == "shipped"]:
        del sys.modules[name]


def version_of(tmp_path, text):
    root = write_files(tmp_path / text, {"shipped/__init__.py": f"VERSION = {text!r}\n"})
    return [("shipped/__init__.py", str(root / "shipped/__init__.py"))]


def test_a_bundle_is_fetched_once_per_machine_and_first_on_the_path(machine, tmp_path):
    ref = machine.add("shipped", version_of(tmp_path, "one"))
    bundles.mount([ref], machine.fetch)
    bundles.mount([ref], machine.fetch)
    assert importlib.import_module("shipped").VERSION == "one"
    assert sys.path[0].endswith(ref.digest) and machine.fetches() == 1
    assert bundles.extracted(ref, machine.fetch) == sys.path[0]  # another process's look
    assert machine.fetches() == 1


def extract_in_a_child(machine, ref):
    bundles.extracted(ref, machine.fetch)


@pytest.mark.skipif(sys.platform == "win32", reason="forks")
def test_processes_that_need_a_bundle_at_once_fetch_it_once(machine, tmp_path):
    ref = machine.add("shipped", version_of(tmp_path, "one"))
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=extract_in_a_child, args=(machine, ref))
                for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    assert machine.fetches() == 1
    assert [name for name in os.listdir(tmp_path / "cache" / "bundles")
            if not name.endswith(".lock")] == [ref.digest]


def test_another_version_replaces_one_that_was_never_imported(machine, tmp_path):
    one = machine.add("shipped", version_of(tmp_path, "one"))
    two = machine.add("shipped", version_of(tmp_path, "two"))
    bundles.mount([one], machine.fetch)
    bundles.mount([two], machine.fetch)
    assert importlib.import_module("shipped").VERSION == "two"
    assert not any(entry.endswith(one.digest) for entry in sys.path)


def test_a_process_that_imported_one_version_refuses_another(machine, tmp_path):
    one = machine.add("shipped", version_of(tmp_path, "one"))
    two = machine.add("shipped", version_of(tmp_path, "two"))
    bundles.mount([one], machine.fetch)
    importlib.import_module("shipped")
    problem = bundles.conflict([two])
    assert problem is not None and problem.replaceable
    assert f"bundle {one.digest[:12]}" in str(problem) and two.digest[:12] in str(problem)
    with pytest.raises(ModuleConflictError):
        bundles.mount([two], machine.fetch)
    assert importlib.import_module("shipped").VERSION == "one"  # never reloaded


def test_a_module_the_worker_itself_imported_cannot_be_replaced(machine, tmp_path,
                                                               monkeypatch):
    ref = machine.add("shipped", version_of(tmp_path, "one"))
    monkeypatch.syspath_prepend(str(write_files(tmp_path / "worker's own",
                                                {"shipped/__init__.py": ""})))
    importlib.import_module("shipped")
    monkeypatch.setattr(bundles, "_baseline", frozenset(["shipped"]))
    problem = bundles.conflict([ref])
    assert problem is not None and not problem.replaceable
    assert "the worker itself imports it" in str(problem)


def test_a_bundle_beats_an_installed_copy_not_yet_imported(machine, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install(tmp_path / "site-packages", "shipped", "9.9")))
    ref = machine.add("shipped", version_of(tmp_path, "one"))
    bundles.mount([ref], machine.fetch)
    assert importlib.import_module("shipped").VERSION == "one"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_a_cache_directory_others_can_write_to_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(bundles.CACHE_VARIABLE, raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    directory = bundles.cache_directory()
    assert os.stat(directory).st_mode & 0o077 == 0
    os.chmod(directory, 0o777)
    with pytest.raises(DistpoolError, match="not this user's alone"):
        bundles.cache_directory()


def test_prune_removes_what_no_task_needs(machine, tmp_path, monkeypatch):
    old = machine.add("shipped", version_of(tmp_path, "one"))
    recent = machine.add("shipped", version_of(tmp_path, "two"))
    now = time.time()
    old_path = bundles.extracted(old, machine.fetch)
    recent_path = bundles.extracted(recent, machine.fetch)
    os.utime(old_path, (now - bundles.UNUSED_FOR - 1,) * 2)
    half_done = os.path.join(os.path.dirname(old_path), "abc.extracting-1234")
    os.mkdir(half_done)
    os.utime(half_done, (now - bundles.IN_USE_FOR - 1,) * 2)
    assert sorted(bundles.prune(now)) == sorted([old_path, half_done])
    assert os.path.isdir(recent_path)
    monkeypatch.setattr(bundles, "CACHE_BYTES", 0)  # over the budget: least recently used,
    assert bundles.prune(now) == []  # but not one used in the last hour
    assert bundles.prune(now + bundles.IN_USE_FOR + 1) == [recent_path]


def with_versions(task, versions, strict=False):
    return dataclasses.replace(task, versions=versions, strict_versions=strict)


def test_a_module_of_another_version_is_a_warning_told_once_per_pool(tmp_path,
                                                                     monkeypatch):
    monkeypatch.syspath_prepend(str(install(tmp_path / "site-packages", "simwrap", "2.0")))
    module_version.cache_clear()
    task = envelope(abs, ((-1,), {}), pool_id="skewed")
    first = execute.execute(with_versions(task, (("simwrap", "1.0"),)))
    assert outcome(first) == (True, 1)
    [warning] = first.warnings
    assert warning.startswith("simwrap is 1.0 on the client but is 2.0 on worker host ")
    assert execute.execute(with_versions(task, (("simwrap", "1.0"),))).warnings == ()
    missing = execute.execute(with_versions(task, (("no_such_module_here", "1.0"),)))
    assert "is not installed on worker host" in missing.warnings[0]
    assert execute.execute(with_versions(task, (("simwrap", "2.0"),))).warnings == ()


def test_with_strict_versions_a_module_of_another_version_fails_the_task_unrun(
        tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install(tmp_path / "site-packages", "simwrap", "2.0")))
    module_version.cache_clear()
    ran = tmp_path / "ran"
    task = dataclasses.replace(
        envelope(open, ((str(ran), "w"), {})), versions=(("simwrap", "1.0"),),
        strict_versions=True)
    ok, (error, _) = outcome(execute.execute(task))
    assert not ok and isinstance(error, VersionMismatchError)
    assert "simwrap is 1.0 on the client but is 2.0" in str(error)
    assert not ran.exists()


def test_a_task_loads_its_function_from_its_bundle(machine, tmp_path):
    source = {"shipped/__init__.py": "def f(x):\n    return 'shipped', x\n"}
    root = write_files(tmp_path / "client", source)
    ref = machine.add("shipped", [("shipped/__init__.py", str(root / "shipped/__init__.py"))])
    sys.path.insert(0, str(root))  # as the client has it
    payload = serialization.dumps(importlib.import_module("shipped").f)
    sys.path.remove(str(root))
    del sys.modules["shipped"]  # as a worker has it: nowhere
    task = dataclasses.replace(envelope(abs, ((1,), {})), function=payload, bundles=(ref,))
    assert outcome(execute.execute(task, machine.fetch)) == (True, ("shipped", 1))
