"""The journal of a resumable named run, on the client's disk: the results of a long map, kept
as they arrive, so that the same script run again under the same name after its client died
(SIGKILL, out of memory, a reboot) takes them up instead of computing them again. Bytes in,
bytes out: what a record means is its caller's business.

A run's directory, ``<root>/<name>/``:

* ``lock``: locked by the process that holds the run for as long as it lives; the operating
  system releases the lock when that process dies, however it dies. Byte 0 is the one locked
  (Windows forbids others to read a locked byte); ``<host> <pid>`` follows, for people and
  ``distpool checkpoints``.
* ``records``: :data:`MAGIC`, then one frame a record: its length (4 bytes, little-endian),
  the CRC-32 of its data (4 bytes), its data: a kind byte, then the record (plain), the
  SHA-256 of a record stored as a blob (blob), or nothing (finished: the run is done).
* ``blobs/``: the records larger than :data:`LARGE`, each a file named by its SHA-256.

Durability. Each append is written at once, so that a crash of the process loses none; a
thread fsyncs what was written in :data:`GROUP_COMMIT` seconds at once, so that a crash of
the machine loses that much at most (a write that failed, a full disk, is kept and tried
again by that thread).
The file is a prefix of the frames followed by what a crash cut short: reading stops at the
first frame whose length or CRC is wrong, and the file is truncated there. A blob is durable
under its name before its reference is appended.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from types import TracebackType

from ..errors import DistpoolError
from .run_lock import LOCK_FILE, hold, holder, release

logger = logging.getLogger("distpool")

#: The start of a records file: a foreign file, or another version's, is refused.
MAGIC = b"distpool journal 1\n"
#: Seconds the thread gathers appends before it writes and fsyncs them at once.
GROUP_COMMIT = 0.1
#: Records larger than this many bytes are stored as blobs.
LARGE = 2**20
RECORDS_FILE, BLOBS = "records", "blobs"

_PLAIN, _BLOB, _FINISHED = b"\0", b"\1", b"\2"
_HEADER = struct.Struct("<II")
_O_BINARY = getattr(os, "O_BINARY", 0)



class Journal:
    """The journal of one named run, held by this process until :meth:`close`."""

    previous: list[bytes]  #: what earlier runs appended, in order, as read at open
    finished: bool  #: whether the earlier run marked the journal finished

    @classmethod
    def open(cls, directory: str, wait: float = 0.0) -> Journal:
        """Hold the run in ``directory`` (made if need be) and read what earlier runs left;
        JournalBusyError if another process holds it still after ``wait`` seconds."""
        directory = os.path.abspath(directory)
        owner = hold(directory, wait)
        try:
            return cls(directory, owner)
        except BaseException:
            release(directory, owner)
            raise

    def __init__(self, directory: str, owner: int) -> None:
        """Use :meth:`open`."""
        self.directory = directory
        self._owner = owner
        path = os.path.join(directory, RECORDS_FILE)
        os.makedirs(os.path.join(directory, BLOBS), exist_ok=True)
        self._file = os.open(path, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o600)
        try:
            frames, self._end, size = _scan(path)
            if size > self._end:
                if self._end:
                    logger.warning("run journal %s: %d bytes of a torn or corrupt tail dropped",
                                   directory, size - self._end)
                os.ftruncate(self._file, self._end)
            if not self._end:
                os.write(self._file, MAGIC)
                self._end = len(MAGIC)
            os.fsync(self._file)
            for folder in (os.path.dirname(directory), directory):
                _fsync_directory(folder)
            self.previous, self.finished = self._resolve(frames)
        except BaseException:
            os.close(self._file)
            raise
        self._buffer = bytearray()  # appended, not yet written (a write failed)
        self._unsynced = False  # written, not yet fsynced
        self._since = 0.0  # when the first record the disk lacks was appended
        self._failure: OSError | None = None
        self._io = threading.Lock()  # taken before _wake, never after
        self._wake = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distpool-journal", daemon=True)
        self._thread.start()

    def append(self, record: bytes) -> None:
        """Add ``record``; durable within about :data:`GROUP_COMMIT` seconds. A large record
        is written as a blob first, on the caller's thread."""
        if len(record) > LARGE:
            digest = hashlib.sha256(record).digest()
            self._store_blob(digest.hex(), record)
            self._add(_BLOB, digest)
        else:
            self._add(_PLAIN, record)

    def flush(self) -> None:
        """Make every record appended so far durable, now."""
        with self._wake:
            self._check()
        self._commit()

    def finish(self) -> None:
        """Mark the run finished, durably: the next open sees ``finished`` (unless records
        were appended after)."""
        self._add(_FINISHED, b"")
        self._commit()

    def restart(self) -> None:
        """Drop every record and blob, durably (a finished run's name used again). Not while
        another thread appends."""
        with self._io:
            with self._wake:
                self._buffer, self._unsynced = bytearray(), False
            os.ftruncate(self._file, len(MAGIC))
            os.fsync(self._file)
            self._end = len(MAGIC)
            _clear(os.path.join(self.directory, BLOBS))
        self.previous, self.finished = [], False

    def close(self) -> None:
        """Make every record durable, stop the thread and let the run go. Idempotent."""
        with self._wake:
            if self._closed.is_set():
                return
            self._closed.set()
            self._wake.notify()
        self._thread.join()
        try:
            self._commit()
        finally:
            os.close(self._file)
            release(self.directory, self._owner)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _add(self, kind: bytes, data: bytes) -> None:
        with self._wake:
            self._check()
            if not self._buffer and not self._unsynced:
                self._since = time.monotonic()
                self._wake.notify()
            self._buffer += _HEADER.pack(len(data) + 1, zlib.crc32(data, zlib.crc32(kind)))
            self._buffer += kind
            self._buffer += data
        # Written at once, fsynced with the group: a crash of this process (SIGKILL, out of
        # memory) then loses nothing appended, one of the machine what the group gathered.
        try:
            with self._io:
                self._write()
        except OSError:
            pass  # kept, and tried again by the thread; appends raise meanwhile

    def _check(self) -> None:
        """Raise if the journal is closed, or its last write failed (held: ``_wake``)."""
        if self._closed.is_set():
            raise ValueError(f"the run journal {self.directory} is closed")
        if self._failure is not None:
            raise DistpoolError(f"the run journal {self.directory} cannot be written: "
                                f"{self._failure}") from self._failure

    def _run(self) -> None:
        """The group commit: GROUP_COMMIT seconds after the first append the disk lacks,
        write and fsync all there is. A failed write (a full disk) is tried again."""
        while True:
            with self._wake:
                while not (self._buffer or self._unsynced) and not self._closed.is_set():
                    self._wake.wait()
                due = self._since + GROUP_COMMIT  # (earlier if appended during a commit)
            if self._closed.wait(max(0.0, due - time.monotonic())):
                return  # close() writes the rest
            try:
                self._commit()
            except OSError:
                pass  # logged; appends raise until a write succeeds

    def _commit(self) -> None:
        """Write what was appended, and fsync what was written."""
        with self._io:
            self._write()
            with self._wake:
                if not self._unsynced:
                    return
                self._unsynced = False
            try:
                os.fsync(self._file)
            except OSError as error:
                with self._wake:
                    self._unsynced = True
                    self._failed(error)
                raise

    def _write(self) -> None:
        """Write what was appended, in one write at the end of the good frames (held:
        ``_io``)."""
        with self._wake:
            data, self._buffer = self._buffer, bytearray()
        if not data:
            return
        try:
            os.lseek(self._file, self._end, os.SEEK_SET)
            view, written = memoryview(data), 0
            while written < len(data):
                written += os.write(self._file, view[written:])
        except OSError as error:
            with self._wake:
                self._buffer[:0] = data
                self._failed(error)
            try:  # no torn frame for the next write to follow
                os.ftruncate(self._file, self._end)
            except OSError:
                pass
            raise
        self._end += len(data)
        with self._wake:
            self._failure = None
            self._unsynced = True

    def _failed(self, error: OSError) -> None:
        """A write or fsync failed (held: ``_wake``): said once, and appends raise until
        one succeeds."""
        if self._failure is None:
            logger.warning("run journal %s cannot be written: %s", self.directory, error)
        self._failure = error

    def _store_blob(self, name: str, record: bytes) -> None:
        """Write ``record`` to ``blobs/<name>``: whole and durable before it has that name."""
        blobs = os.path.join(self.directory, BLOBS)
        if os.path.exists(os.path.join(blobs, name)):
            return
        descriptor, temporary = tempfile.mkstemp(prefix=name, suffix=".tmp", dir=blobs)
        try:
            with open(descriptor, "wb") as file:
                file.write(record)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, os.path.join(blobs, name))
        except BaseException:
            _remove_file(temporary)
            raise
        _fsync_directory(blobs)

    def _resolve(self, frames: list[tuple[bytes, bytes]]) -> tuple[list[bytes], bool]:
        """The records of ``frames``, blobs read and checked, and whether the run finished;
        the blobs no intact record refers to (a crash, a corrupt one) are removed."""
        records: list[bytes] = []
        kept: set[str] = set()
        for kind, data in frames:
            if kind == _PLAIN:
                records.append(data)
            elif kind == _BLOB:
                path = os.path.join(self.directory, BLOBS, data.hex())
                try:
                    with open(path, "rb") as file:
                        record = file.read()
                except OSError:
                    record = None
                if record is not None and hashlib.sha256(record).digest() == data:
                    records.append(record)
                    kept.add(data.hex())
                else:
                    logger.warning("run journal %s: blob %s missing or corrupt: its record is "
                                   "dropped", self.directory, data.hex())
        _clear(os.path.join(self.directory, BLOBS), keep=kept)
        return records, bool(frames) and frames[-1][0] == _FINISHED


@dataclass(frozen=True)
class JournalInfo:
    """A run's journal, as ``distpool checkpoints`` lists it."""

    name: str
    records: int  #: intact records (blobs not checked)
    finished: bool
    size: int  #: bytes on disk, blobs included
    modified: float  #: when it was last written (``time.time()``)
    holder: str | None  #: ``host:pid`` of the process that holds it now, if any


def journals(root: str) -> list[JournalInfo]:
    """The runs' journals in ``root``, by name."""
    found = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        directory = os.path.abspath(os.path.join(root, name))
        try:
            frames, _, _ = _scan(os.path.join(directory, RECORDS_FILE))
            files = [entry.stat() for folder in (directory, os.path.join(directory, BLOBS))
                     for entry in os.scandir(folder) if entry.is_file()]
        except (OSError, DistpoolError):
            continue  # not a journal, or removed meanwhile
        found.append(JournalInfo(
            name, sum(kind != _FINISHED for kind, _ in frames),
            bool(frames) and frames[-1][0] == _FINISHED, sum(s.st_size for s in files),
            max(s.st_mtime for s in files), holder(directory)))
    return found


def remove(root: str, name: str) -> None:
    """Remove the run ``name``'s journal; JournalBusyError while a process holds it."""
    directory = os.path.abspath(os.path.join(root, name))
    if not os.path.isfile(os.path.join(directory, RECORDS_FILE)):
        raise FileNotFoundError(f"no run journal {directory}")
    owner, removed = hold(directory, 0.0), False
    lock_path = os.path.join(directory, LOCK_FILE)
    try:
        _clear(os.path.join(directory, BLOBS))
        os.rmdir(os.path.join(directory, BLOBS))
        os.remove(os.path.join(directory, RECORDS_FILE))
        # POSIX: removed while locked, so nobody locks this file after us (an open that did
        # finds its path gone, and tries again). Windows removes no open file: done below.
        removed = _remove_file(lock_path)
    finally:
        release(directory, owner)
    if not removed:
        _remove_file(lock_path)
    try:
        os.rmdir(directory)
    except OSError:
        pass  # taken again meanwhile


def _scan(path: str) -> tuple[list[tuple[bytes, bytes]], int, int]:
    """The intact frames of a records file, as (kind, data), the offset where they end (0
    when the file has no whole header: new, or cut short at creation) and the file's size."""
    frames: list[tuple[bytes, bytes]] = []
    with open(path, "rb") as file:
        start = file.read(len(MAGIC))
        if start != MAGIC:
            if not MAGIC.startswith(start):
                raise DistpoolError(f"{path} is not a run journal of this distpool version")
            return frames, 0, len(start)
        end = len(MAGIC)
        while True:
            header = file.read(_HEADER.size)
            if len(header) < _HEADER.size:
                break
            length, checksum = _HEADER.unpack(header)
            if not 0 < length <= LARGE + 1:  # (a zeroed hole would pass the CRC with 0)
                break
            data = file.read(length)
            kind = data[:1]
            if (len(data) < length or zlib.crc32(data) != checksum
                    or not (kind in (_PLAIN, _FINISHED) or kind == _BLOB and length == 33)):
                break
            frames.append((kind, data[1:]))
            end += _HEADER.size + length
        return frames, end, file.seek(0, os.SEEK_END)


def _fsync_directory(path: str) -> None:
    """Make the names in a directory durable. POSIX only: on Windows os.open cannot open a
    directory (it raises), and there is no such call to make."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # a file system that cannot sync a directory
    finally:
        os.close(descriptor)


def _clear(folder: str, keep: Collection[str] = ()) -> None:
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name not in keep:
            _remove_file(os.path.join(folder, name))


def _remove_file(path: str) -> bool:
    try:
        os.remove(path)
    except OSError:
        return False
    return True
