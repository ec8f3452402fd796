"""What a single-process worker (a slot) runs now, told to the parent that supervises it,
and the directory that holds those files.

Each slot rewrites a small file of its own when it takes a message and when it is done with
it. The parent reads the file when the slot dies, to put the message it held back on the
queue at once and count the attempt, and while the slot lives, to kill it once its message
runs past the hard time limit. A file works the same on Windows, costs two system calls a
message, and outlives the slot that wrote it.

Leftovers. A node's state files live in a directory ``distpool-slots-*`` of the system's
temporary directory (:class:`StateDirectory`), removed when the node stops. The parent locks
a file in it for as long as it lives; the operating system releases the lock when the parent
dies, however it dies. A node that starts removes the directories whose lock it can take
(:func:`remove_leftovers`): their parents are gone (SIGKILL, a crash). The directory of a
live node is locked and left alone, whatever the age of its pid, which the system may since
have given to another process: the pid in the file is for people only.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ...platform import lock, write_at_start

logger = logging.getLogger("distpool")

#: Every state is written padded to this size at offset 0, so no write leaves a longer, older
#: state's tail behind and a reader sees one whole state.
RECORD_SIZE = 256
#: The slots' state directories, in the system's temporary directory, are named so.
DIRECTORY_PREFIX = "distpool-slots-"
#: The file of a state directory that its parent keeps locked, with its pid in it.
OWNER_FILE = "owner"

_O_BINARY = getattr(os, "O_BINARY", 0)
#: The state directories of this process: never probed, since closing any descriptor of a
#: file releases the process's POSIX lock on it.
_ours: set[str] = set()


@dataclass(frozen=True)
class Running:
    """The message a slot holds: its id, the broker's delivery tag, the wall-clock time
    (``time.time()``) past which it must be killed, if any, and when the slot took it (for
    ``distpool status``; not part of what identifies it)."""

    message_id: str
    delivery_tag: str
    kill_at: float | None
    since: float | None = field(default=None, compare=False)


class SlotState:
    """The state file at ``path``: written by the slot, read by its parent.

    It names the slot's consumer (its ``holder`` id, whose held list the parent restores
    when the slot dies, see :mod:`distpool.brokers.held_messages`) and the message it runs.
    """

    def __init__(self, path: str, holder: str = "") -> None:
        self.path = path
        self.holder = holder
        self._file: int | None = None

    def running(self, message_id: str, delivery_tag: str, kill_at: float | None) -> None:
        self._write(f"{self.holder} {message_id} {delivery_tag} {kill_at or 0!r} "
                    f"{time.time():.3f}")

    def idle(self) -> None:
        self._write(self.holder)

    def read(self) -> Running | None:
        """The message the slot holds, or None when it holds none (or the file is unreadable
        or garbled: then there is nothing the parent could act on)."""
        fields = self._fields()
        if len(fields) not in (4, 5):  # 4: written by an older slot, without its start
            return None
        _, message_id, delivery_tag, kill_at, *since = fields
        try:
            deadline = float(kill_at)
            started = float(since[0]) if since else None
        except ValueError:
            return None
        return Running(message_id, delivery_tag, deadline or None, started)

    def read_holder(self) -> str | None:
        """The slot's consumer id, once the slot has written it."""
        fields = self._fields()
        return fields[0] if fields else None

    def close(self) -> None:
        """Close the file, if this side wrote it (Windows removes no file held open)."""
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def _fields(self) -> list[str]:
        try:
            with open(self.path, "rb") as file:
                return file.read(RECORD_SIZE).decode("ascii").split()
        except (OSError, UnicodeDecodeError):
            return []

    def _write(self, text: str) -> None:
        record = text.encode("ascii")
        if len(record) > RECORD_SIZE:
            raise ValueError(f"slot state too long: {text!r}")
        if self._file is None:
            self._file = os.open(self.path, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o600)
        write_at_start(self._file, record.ljust(RECORD_SIZE))


class StateDirectory:
    """This node's directory of slot state files, with its owner file locked while the
    parent lives (see Leftovers above). Made by the parent, before it starts any slot."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix=DIRECTORY_PREFIX)
        _ours.add(self.path)
        self._owner = os.open(os.path.join(self.path, OWNER_FILE),
                              os.O_RDWR | os.O_CREAT | _O_BINARY, 0o600)
        # Blocking: a starting node may be probing the new file for an instant. The pid is
        # written once locked: an empty owner file tells a prober it is being set up.
        if lock(self._owner, wait=True):
            os.write(self._owner, f"{os.getpid()}\n".encode("ascii"))
        else:
            logger.warning("cannot lock %s; if this node is killed, the directory stays",
                           self.path)

    def remove(self) -> None:
        _remove(self.path, before_the_owner_file=lambda: os.close(self._owner))
        _ours.discard(self.path)


def remove_leftovers(directory: str | None = None) -> list[str]:
    """Remove the slot state directories in ``directory`` (the system's temporary directory)
    whose parent is gone; return their paths."""
    removed = []
    pattern = os.path.join(directory or tempfile.gettempdir(), DIRECTORY_PREFIX + "*")
    for path in glob.glob(pattern):
        if path not in _ours and _abandoned(path):
            _remove(path)
            removed.append(path)
    return removed


def _abandoned(path: str) -> bool:
    try:
        owner = os.open(os.path.join(path, OWNER_FILE), os.O_RDWR | _O_BINARY)
    except OSError:  # not a node's, another user's, or an older distpool's: not ours to judge
        return False
    try:
        if not lock(owner, wait=False):
            return False  # its parent lives
        os.lseek(owner, 0, os.SEEK_SET)
        return bool(os.read(owner, 64).strip())  # empty: its parent is still setting it up
    except OSError:
        return False
    finally:
        os.close(owner)  # and with it the lock taken here


def _remove(path: str, before_the_owner_file: Callable[[], None] = lambda: None) -> None:
    """Remove a state directory, its owner file last: a directory that cannot be removed
    whole (on Windows, a slot that still runs holds its file open) keeps it, and the next
    node to start tries again."""
    try:
        names = os.listdir(path)
    except OSError:
        names = []
    for name in names:
        if name != OWNER_FILE:
            try:
                os.remove(os.path.join(path, name))
            except OSError:
                pass
    before_the_owner_file()
    try:
        if os.listdir(path) == [OWNER_FILE]:
            os.remove(os.path.join(path, OWNER_FILE))
        os.rmdir(path)
    except OSError:
        pass
