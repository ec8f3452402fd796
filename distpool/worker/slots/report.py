"""The node record that the parent of slots (:mod:`.parent`) publishes for ``distpool
status``: the node, and what each of its slots runs, as the parent reads it from the slots'
state files (:mod:`.state`). See :mod:`distpool.store.nodes` for where it is kept.

The parent publishes between two looks at its slots, through one connection of its own to
the result store (opened on first use, closed before each slot is forked): when what its
slots run changes, at most every ``CHANGE_INTERVAL``, and every ``PUBLISH_INTERVAL`` in any
case, which renews the record. A node that is killed stops renewing it, and ``distpool
status`` shows it lapsed ``RECORD_TTL`` later. A node that stops removes its record.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from ...brokers.celery_app import urls
from ...config import Settings, mask_url
from ...store.nodes import NodeRecords

logger = logging.getLogger("distpool")

#: How often the record is renewed when nothing changes, and how long it lives unless renewed.
PUBLISH_INTERVAL = 5.0
RECORD_TTL = 3 * PUBLISH_INTERVAL
#: A change is published at most this often: slots that run short tasks change all the time.
CHANGE_INTERVAL = 1.0


@dataclasses.dataclass(frozen=True)
class SlotReport:
    """What the record says of one slot: its Celery node ``name``, ``pid`` (None while it
    waits to restart), ``state`` (``idle``, ``busy`` or ``restarting``), and the ``message``
    it runs ``since`` when (Unix time), if busy."""

    index: int
    name: str
    pid: int | None
    state: str
    message: str | None = None
    since: float | None = None


class NodeReport:
    """Publishes the record of node ``name`` (host placeholders expanded) serving
    ``settings.queue``. ``records`` opens the store (for tests); ``clock`` is monotonic."""

    def __init__(self, settings: Settings, name: str,
                 records: Callable[[], NodeRecords] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        _, result_url = urls(settings)
        self._where = mask_url(result_url)
        self._open = records or (lambda: NodeRecords(result_url))
        self._records: NodeRecords | None = None
        self._queue = settings.queue
        self._name = name
        self._clock = clock
        self._head: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(),
                                      "started": round(time.time(), 3)}
        self._published: list[SlotReport] | None = None
        self._published_at = float("-inf")
        self._failing = False

    def update(self, slots: Sequence[SlotReport]) -> None:
        """Publish what ``slots`` run, if it changed or the record is due for renewal."""
        now = self._clock()
        since = now - self._published_at
        # While the store fails, tried again every PUBLISH_INTERVAL only: each try may wait
        # for its timeout, and the parent has slots to look after.
        changed = not self._failing and list(slots) != self._published
        if since < PUBLISH_INTERVAL and not (changed and since >= CHANGE_INTERVAL):
            return
        self._published_at = now  # also after a failure: the next attempt waits its turn
        record = {**self._head, "slots": [dataclasses.asdict(slot) for slot in slots]}
        try:
            if self._records is None:
                self._records = self._open()
            self._records.publish(self._queue, self._name, record, RECORD_TTL)
        except Exception as exc:
            self._published = None
            if not self._failing:  # once, not every few seconds while the store is away
                logger.warning("could not publish this node's record to %s (distpool status "
                               "shows the node lapsed meanwhile): %s", self._where, exc)
            self._failing = True
            return
        if self._failing:
            logger.warning("published this node's record to %s again", self._where)
            self._failing = False
        self._published = list(slots)

    def disconnect(self) -> None:
        """Close the connection, to open it again at the next publish."""
        if self._records is not None:
            self._records.close()
            self._records = None

    def close(self) -> None:
        """Remove the record (the node stops) and close the connection."""
        if self._records is None:
            return
        try:
            self._records.remove(self._queue, self._name)
        except Exception as exc:  # it lapses on its own
            logger.warning("could not remove this node's record from %s: %s", self._where, exc)
        finally:
            self._records.close()
            self._records = None
