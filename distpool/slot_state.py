"""What a single-process worker (a slot) runs now, told to the parent that supervises it.

Each slot rewrites a small file of its own when it takes a message and when it is done with
it. The parent reads the file when the slot dies, to put the message it held back on the
queue at once and count the attempt, and while the slot lives, to kill it once its message
runs past the hard time limit. A file works the same on Windows, costs two system calls a
message, and outlives the slot that wrote it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Every state is written padded to this size at offset 0, so no write leaves a longer, older
#: state's tail behind and a reader sees one whole state.
RECORD_SIZE = 256


@dataclass(frozen=True)
class Running:
    """The message a slot holds: its id, the broker's delivery tag, and the wall-clock time
    (``time.time()``) past which it must be killed, if any."""

    message_id: str
    delivery_tag: str
    kill_at: float | None


class SlotState:
    """The state file at ``path``: written by the slot, read by its parent."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: int | None = None

    def running(self, message_id: str, delivery_tag: str, kill_at: float | None) -> None:
        self._write(f"{message_id} {delivery_tag} {kill_at or 0!r}")

    def idle(self) -> None:
        self._write("")

    def read(self) -> Running | None:
        """The message the slot holds, or None when it holds none (or the file is unreadable
        or garbled: then there is nothing the parent could act on)."""
        try:
            with open(self.path, "rb") as file:
                fields = file.read(RECORD_SIZE).decode("ascii").split()
        except (OSError, UnicodeDecodeError):
            return None
        if len(fields) != 3:
            return None
        message_id, delivery_tag, kill_at = fields
        try:
            deadline = float(kill_at)
        except ValueError:
            return None
        return Running(message_id, delivery_tag, deadline or None)

    def _write(self, text: str) -> None:
        record = text.encode("ascii")
        if len(record) > RECORD_SIZE:
            raise ValueError(f"slot state too long: {text!r}")
        if self._file is None:
            self._file = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0),
                                 0o600)
        os.lseek(self._file, 0, os.SEEK_SET)
        os.write(self._file, record.ljust(RECORD_SIZE))
