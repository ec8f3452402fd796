"""Progress bars for ``progress=True``: tqdm on stderr, counting items."""

from __future__ import annotations

import sys
from typing import Any


class TqdmDisplay:
    """A :class:`distpool.results.ProgressDisplay` drawn by tqdm."""

    def __init__(self, total: int | None, function: Any) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=getattr(function, "__name__", "tasks"),
                         unit="item", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int) -> object:
        return self._bar.update(n)

    def set_total(self, total: int) -> None:
        self._bar.total = total
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
