"""Fixtures of the client's unit tests: a backend the test drives by hand."""

from __future__ import annotations

import threading
import time

import pytest

from distpool import backends
from distpool.backends.eager import EagerBackend


class ManualBackend(EagerBackend):
    """Publishing queues a message; :meth:`run_one` runs the oldest, as a worker would."""

    def __init__(self):
        super().__init__()
        self.messages = []
        self.queued = []
        self.max_in_flight = 0
        self.cancelled = None
        self._published_cond = threading.Condition()

    @property
    def published(self):
        """Every envelope published so far, in order."""
        return [envelope for message in self.messages for envelope in message]

    def worker_slots(self):
        return 3

    def publish(self, messages):
        with self._published_cond:
            self.messages.extend(messages)
            self.queued.extend(messages)
            self.max_in_flight = max(self.max_in_flight, len(self.queued))
            self._published_cond.notify_all()

    def wait_published(self, count, timeout=5.0):
        with self._published_cond:
            assert self._published_cond.wait_for(lambda: len(self.messages) >= count, timeout)

    def run_one(self):
        with self._published_cond:
            message = self.queued.pop(0)
        super().publish([message])

    def cancel(self, pool_id, message_ids):
        self.cancelled = list(message_ids)

    def run_until_ready(self, result, timeout=10.0):
        """Run queued messages, as workers would, until ``result`` is complete."""
        deadline = time.monotonic() + timeout
        while not result.ready():
            assert time.monotonic() < deadline, "the result did not complete"
            if self.queued:
                self.run_one()
            else:
                time.sleep(0.001)


@pytest.fixture
def manual(monkeypatch):
    backend = ManualBackend()
    monkeypatch.setattr(backends, "connect", lambda settings: backend)
    return backend
