"""What a pool's calls take to the workers: which modules are the user's own, their bundles,
and the versions of the installed modules they rely on."""

from __future__ import annotations

import importlib
import io
import os
import sys
import warnings
import zipfile

import pytest

from distpool.client import modules, shipping
from distpool.client.shipping import AUTO, Shipping
from distpool.errors import PayloadTooLargeError
from distpool.wire import serialization
from distpool.wire.versions import module_version
from tests.projects import FORECAST, install, write_files


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The forecast package on the import path, as a script's directory puts it there; every
    cache of what is where emptied before and after."""
    root = write_files(tmp_path / "project", FORECAST)
    monkeypatch.syspath_prepend(str(root))
    forget_modules()
    yield root
    forget_modules()


def forget_modules():
    for name in [name for name in sys.modules
                 if name.partition(".")[0] in ("forecast", "simwrap", "helpers")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    modules._kinds.clear()
    module_version.cache_clear()
    shipping._BUNDLES = shipping._Bundles()


def referenced(obj):
    found: set[str] = set()
    serialization.dumps(obj, modules=found)
    return found


def members(bundle):
    with zipfile.ZipFile(io.BytesIO(bundle.archive.to_bytes())) as archive:
        return sorted(archive.namelist())


def test_a_payload_names_the_modules_it_refers_to(project):
    from forecast.model import Case
    from forecast.tasks import run

    assert "forecast.tasks" in referenced(run)
    assert "forecast.model" in referenced([Case("a", 1.0)])
    assert not referenced(list(range(10)))


def test_the_kinds_of_module(project):
    import json  # noqa: F401

    import forecast.tasks  # noqa: F401

    assert modules.kind("forecast") == modules.USERS
    assert modules.kind("json") == modules.STDLIB
    assert modules.kind("pytest") == modules.INSTALLED
    assert modules.kind("distpool") == modules.STDLIB  # the workers' own, never shipped
    assert modules.kind("no_such_module_here") is None


def test_a_package_in_a_site_packages_directory_is_installed(project, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install(tmp_path / "site-packages", "simwrap", "1.0")))
    import simwrap  # noqa: F401

    assert modules.kind("simwrap") == modules.INSTALLED
    assert module_version("simwrap") == "1.0"


def test_auto_ships_the_users_package_and_names_the_versions_it_relies_on(
        project, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install(tmp_path / "site-packages", "simwrap", "1.0")))
    (project / "forecast" / "solver.py").write_text("import simwrap\n")
    import forecast.solver  # noqa: F401  (imports the installed wrapper)
    from forecast.tasks import run

    needs = Shipping((AUTO,)).requirements(referenced(run))
    [bundle] = needs.bundles
    assert bundle.name == "forecast"
    assert members(bundle) == ["forecast/__init__.py", "forecast/model.py",
                               "forecast/solver.py", "forecast/tasks.py"]
    assert ("simwrap", "1.0") in needs.versions  # reached through the package's imports


def test_what_never_travels(project):
    (project / "forecast" / "__pycache__").mkdir()
    (project / "forecast" / "__pycache__" / "tasks.cpython-311.pyc").write_bytes(b"")
    (project / "forecast" / ".git").mkdir()
    (project / "forecast" / ".git" / "config.py").write_text("")
    (project / "forecast" / "tables.csv").write_text("a,b\n")
    from forecast.tasks import run

    [bundle] = Shipping((AUTO,)).requirements(referenced(run)).bundles
    assert members(bundle) == ["forecast/__init__.py", "forecast/model.py",
                               "forecast/tasks.py"]


def test_data_travels_when_named(project, monkeypatch):
    (project / "forecast" / "tables").mkdir()
    (project / "forecast" / "tables" / "loads.csv").write_text("a,b\n")
    from forecast.tasks import run

    monkeypatch.chdir(project)
    needs = Shipping((AUTO, "forecast/tables")).requirements(referenced(run))
    assert "forecast/tables/loads.csv" in members(needs.bundles[0])


def test_off_ships_nothing_and_a_list_ships_what_it_names(project):
    from forecast.tasks import run

    assert Shipping(()).requirements(referenced(run)).bundles == ()
    write_files(project, {"helpers.py": "def f(): pass\n"})
    [bundle] = Shipping(("helpers",)).requirements(referenced(run)).bundles
    assert bundle.name == "helpers" and members(bundle) == ["helpers.py"]


@pytest.mark.parametrize("entry, message", [
    ("no_such_module_here", "no such file, nor a module"),
    ("not a module", "no such file, nor a module"),
    ("/", "not a module, a package or a file inside a package")])
def test_a_ship_entry_that_names_nothing_fails_at_once(project, entry, message):
    with pytest.raises(ValueError, match=message):
        Shipping((entry,))


def test_an_unchanged_package_is_the_same_bundle_and_an_edited_one_another(project,
                                                                          monkeypatch):
    from forecast.tasks import run

    ship = Shipping((AUTO,))
    first = ship.requirements(referenced(run)).bundles[0]
    assert Shipping((AUTO,)).requirements(referenced(run)).bundles[0] is first
    (project / "forecast" / "model.py").write_text('VERSION = "two"\n')
    monkeypatch.setattr(shipping, "RECHECK_AFTER", 0.0)
    second = ship.requirements(referenced(run)).bundles[0]
    assert second.archive.digest != first.archive.digest


def test_a_package_with_compiled_code_is_not_shipped_and_says_so_once(project):
    (project / "forecast" / "fast.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    from forecast.tasks import run

    with pytest.warns(UserWarning, match="does not ship forecast: it holds compiled code"):
        needs = Shipping((AUTO,)).requirements(referenced(run))
    assert needs.bundles == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Shipping((AUTO,)).requirements(referenced(run))


def test_a_bundle_over_the_limit_fails_naming_its_largest_files(project, monkeypatch):
    monkeypatch.setattr(shipping, "MAX_BUNDLE_SIZE", 10_000)
    (project / "forecast" / "weights.py").write_bytes(os.urandom(20_000).hex().encode())
    from forecast.tasks import run

    with pytest.raises(PayloadTooLargeError, match=r"weights\.py \(40,000 bytes"):
        Shipping((AUTO,)).requirements(referenced(run))
