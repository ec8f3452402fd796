"""Bundles: the same files make the same bytes anywhere, and nothing unsafe is extracted."""

from __future__ import annotations

import io
import os
import time
import zipfile

import pytest

from distpool.errors import EnvelopeError
from distpool.wire.bundles import MAX_EXTRACTED_SIZE, build, check_member, extract


def package(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return [(name, str(root / name)) for name in files]


def test_the_same_files_make_the_same_bytes_whatever_their_times_and_order(tmp_path):
    files = package(tmp_path, {"forecast/__init__.py": "", "forecast/tasks.py": "x = 1\n"})
    first = build(files)
    for _, path in files:
        os.utime(path, (time.time() + 3600, time.time() + 3600))
        os.chmod(path, 0o600)
    assert build(list(reversed(files))) == first
    (tmp_path / "forecast/tasks.py").write_text("x = 2\n")
    assert build(files) != first


def test_a_bundle_extracts_to_what_it_was_made_of(tmp_path):
    files = package(tmp_path / "src", {"forecast/__init__.py": "", "forecast/sub/m.py": "y\n"})
    extract(build(files), "forecast", str(tmp_path / "out"))
    assert (tmp_path / "out/forecast/sub/m.py").read_text() == "y\n"
    assert (tmp_path / "out/forecast/__init__.py").exists()


def test_a_single_module_bundle(tmp_path):
    files = package(tmp_path / "src", {"helpers.py": "def f(): pass\n"})
    extract(build(files), "helpers", str(tmp_path / "out"))
    assert (tmp_path / "out/helpers.py").exists()


@pytest.mark.parametrize("name", [
    "../evil.py", "forecast/../../evil.py", "/etc/passwd", "C:/evil.py", "c:evil.py",
    "forecast\\..\\evil.py", "forecast/./x.py", "forecast//x.py", "other/x.py", "forecast",
    "forecast.pyc", "", "forecast/x\x00.py"])
def test_member_names_outside_the_bundle_are_refused(name):
    with pytest.raises(EnvelopeError):
        check_member(name, "forecast")


@pytest.mark.parametrize("name", ["forecast/x.py", "forecast/sub/y.csv", "forecast.py"])
def test_member_names_inside_the_bundle_are_taken(name):
    check_member(name, "forecast")


def zip_of(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def test_an_archive_with_an_unsafe_member_extracts_nothing(tmp_path):
    data = zip_of([("forecast/ok.py", b""), ("../escaped.py", b"")])
    with pytest.raises(EnvelopeError, match="unsafe member"):
        extract(data, "forecast", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped.py").exists()


def test_an_archive_claiming_more_than_a_bundle_can_hold_is_refused(tmp_path):
    data = bytearray(zip_of([("forecast/big.py", b"x")]))
    # The central directory's uncompressed size of the one member, forged.
    header = data.rindex(b"PK\x01\x02")
    data[header + 24:header + 28] = (MAX_EXTRACTED_SIZE + 1).to_bytes(4, "little")
    with pytest.raises(EnvelopeError, match="would extract to more"):
        extract(bytes(data), "forecast", str(tmp_path / "out"))


@pytest.mark.parametrize("data, module, message", [
    (b"not a zip", "forecast", "not a zip"),
    (b"", "../forecast", "not a module name")])
def test_what_is_not_a_bundle_is_refused(tmp_path, data, module, message):
    with pytest.raises(EnvelopeError, match=message):
        extract(data, module, str(tmp_path / "out"))
