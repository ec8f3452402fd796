"""What differs between the platforms distpool runs on, in one place.

The rest of distpool asks this module instead of testing ``sys.platform`` itself.
"""

from __future__ import annotations

import os
import sys

WINDOWS = sys.platform == "win32"

if sys.platform == "win32":  # (spelt so, for mypy to check each branch on its platform)
    import msvcrt

    def write_at_start(descriptor: int, data: bytes) -> None:
        """Write ``data`` at the start of the file (Windows has no ``pwrite``)."""
        os.lseek(descriptor, 0, os.SEEK_SET)
        os.write(descriptor, data)

    def lock(descriptor: int, wait: bool) -> bool:
        """Lock the file's first byte for this process, until it closes the file or ends;
        False if another process holds it (after 10 s of retries, with ``wait``)."""
        os.lseek(descriptor, 0, os.SEEK_SET)
        try:  # LK_LOCK retries for 10 s: long enough for a prober to let go
            msvcrt.locking(descriptor, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
else:
    import fcntl

    def write_at_start(descriptor: int, data: bytes) -> None:
        """Write ``data`` at the start of the file, in one system call."""
        os.pwrite(descriptor, data, 0)

    def lock(descriptor: int, wait: bool) -> bool:
        """Lock the file for this process (not its forked children), until it closes the
        file or ends; False if another process holds it (and ``wait`` is False)."""
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True
