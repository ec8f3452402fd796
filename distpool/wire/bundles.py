"""Bundles: the user's own modules as they travel to the workers.

A bundle is one top-level package or module of the user's (``forecast/``, ``helpers.py``) as
a zip archive that the same files always make byte for byte: members in sorted order, with
fixed timestamps, permissions and system, so that its SHA-256 names its content. A changed
file makes another bundle; an unchanged package, the same one on every client.

A bundle travels as a blob of its pool (:mod:`distpool.store.blobs`), and the task envelope
carries and signs its reference (:class:`BundleRef`): a node checks the blob's size and hash
against it before it extracts anything (:mod:`distpool.worker.bundles`). :func:`extract` still
refuses any member that would land outside the bundle's own directory.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import zipfile
from collections.abc import Iterable
from typing import NamedTuple

from ..errors import EnvelopeError

#: The largest bundle a call may send; a larger one is an error at the call, naming its
#: largest files (data that found its way into a package, a virtual environment inside it).
MAX_BUNDLE_SIZE = 64 * 2**20
#: What an archive may hold once extracted, at most: deflate compresses source about 4 to 1,
#: and an archive that claims far more is not one this module made.
MAX_EXTRACTED_SIZE = 16 * MAX_BUNDLE_SIZE
MAX_MEMBERS = 100_000
#: Zip's earliest date: every member carries it, so that no clock changes the bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
#: What a member's mode and system say, whatever the client's platform: a Unix file, rw-r--r--.
_MODE = 0o100644 << 16
_UNIX = 3
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BundleRef(NamedTuple):
    """A bundle as an envelope names it: the top-level module it provides, and the SHA-256
    (hex) and size of its archive, which is a blob of the pool."""

    name: str
    digest: str
    size: int


def build(files: Iterable[tuple[str, str]]) -> bytes:
    """The archive of ``files``, pairs of ``(name in the archive, path on disk)``; names use
    ``/``. The same files give the same bytes on any machine."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, path in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = _MODE
            info.create_system = _UNIX
            with open(path, "rb") as source:
                # Level 1: a fifth of level 6's time, for about a tenth more bytes (see
                # README, Running on several servers).
                archive.writestr(info, source.read(), compresslevel=1)
    return buffer.getvalue()


def extract(data: bytes | bytearray | memoryview, module: str, destination: str) -> None:
    """Extract the bundle of top-level module ``module`` into the new directory
    ``destination``. Raises :class:`~distpool.errors.EnvelopeError` if the archive is not
    a bundle of ``module``: a member outside ``module/`` or ``module.py``, a name with
    ``..``, an absolute path or a drive letter, or more than it could ever hold."""
    if not check_module_name(module):
        raise EnvelopeError(f"a bundle names {module!r}, which is not a module name")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise EnvelopeError(f"the bundle of {module} is not a zip archive: {exc}") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise EnvelopeError(f"the bundle of {module} has {len(members):,} members")
        if sum(member.file_size for member in members) > MAX_EXTRACTED_SIZE:
            raise EnvelopeError(f"the bundle of {module} would extract to more than "
                                f"{MAX_EXTRACTED_SIZE:,} bytes")
        for member in members:
            check_member(member.filename, module)
        os.makedirs(destination)
        for member in members:
            if member.is_dir():
                continue
            target = os.path.join(destination, *member.filename.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as sink:
                sink.write(source.read())


def check_module_name(name: str) -> bool:
    """Whether ``name`` can be a top-level module's: an identifier of ASCII letters, digits
    and underscores (what a bundle's members and a node's cache are named by)."""
    return bool(_NAME.match(name)) and len(name) <= 200


def check_member(name: str, module: str) -> None:
    """Raise :class:`~distpool.errors.EnvelopeError` unless ``name`` is a member a bundle of
    ``module`` may hold: a relative path below ``module/``, or ``module.py`` itself."""
    parts = name.split("/")
    unsafe = (
        not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or ":" in name  # a drive letter (C:), or an alternate data stream on Windows
        or any(part in ("..", ".") for part in parts)
        or posixpath.normpath(name) != name.rstrip("/")
    )
    if unsafe:
        raise EnvelopeError(f"the bundle of {module} holds an unsafe member name {name!r}")
    if not (name == f"{module}.py" or (parts[0] == module and len(parts) > 1)):
        raise EnvelopeError(f"the bundle of {module} holds {name!r}, which is not part of it")
