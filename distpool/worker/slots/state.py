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
    """The state file at ``path``: written by the slot, read by its parent.

    It names the slot's consumer (its ``holder`` id, whose held list the parent restores
    when the slot dies, see :mod:`distpool.brokers.held_messages`) and the message it runs.
    """

    def __init__(self, path: str, holder: str = "") -> None:
        self.path = path
        self.holder = holder
        self._file: int | None = None

    def running(self, message_id: str, delivery_tag: str, kill_at: float | None) -> None:
        self._write(f"{self.holder} {message_id} {delivery_tag} {kill_at or 0!r}")

    def idle(self) -> None:
        self._write(self.holder)

    def read(self) -> Running | None:
        """The message the slot holds, or None when it holds none (or the file is unreadable
        or garbled: then there is nothing the parent could act on)."""
        fields = self._fields()
        if len(fields) != 4:
            return None
        _, message_id, delivery_tag, kill_at = fields
        try:
            deadline = float(kill_at)
        except ValueError:
            return None
        return Running(message_id, delivery_tag, deadline or None)

    def read_holder(self) -> str | None:
        """The slot's consumer id, once the slot has written it."""
        fields = self._fields()
        return fields[0] if fields else None

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
            self._file = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0),
                                 0o600)
        os.lseek(self._file, 0, os.SEEK_SET)
        os.write(self._file, record.ljust(RECORD_SIZE))
