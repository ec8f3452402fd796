"""Fixtures of the client's unit tests: a transport the test drives by hand."""

from __future__ import annotations

import threading
import time

import pytest

from distpool import transports
from distpool.transports import Transport
from distpool.transports.eager import EagerPublisher, MemoryStore
from distpool.wire.envelope import TaskEnvelope
from distpool.wire.signing import Signer


class ManualStore(MemoryStore):
    def worker_slots(self, queue):
        return 3


class ManualPublisher(EagerPublisher):
    """Publishing queues a message; :meth:`run_one` runs the oldest, as a worker would."""

    def __init__(self, store, signer):
        super().__init__(store, signer)
        self.store = store
        self.messages = []
        self.queued = []
        self.max_in_flight = 0
        self.cancelled = None
        self._published_cond = threading.Condition()

    @property
    def published(self):
        """Every envelope published so far, in order, as a worker reads it."""
        return [envelope for message in self.messages for envelope in message]

    def publish(self, messages):
        with self._published_cond:
            self.messages.extend([TaskEnvelope.from_wire(wire, self._signer)
                                  for wire in message.args] for message in messages)
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

    def revoke(self, message_ids):
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
    signer = Signer(b"the unit tests' key")
    publisher = ManualPublisher(ManualStore(), signer)
    monkeypatch.setattr(transports, "connect",
                        lambda settings: Transport(publisher, publisher.store, signer))
    return publisher
