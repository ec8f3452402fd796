"""The poller of a worker without an event loop: an acknowledgement's wake ends its blocked
poll at once, and nothing else does (no Redis: a socket pair stands in for a channel's)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from queue import Empty
from types import SimpleNamespace

import pytest
from kombu import Connection
from kombu.asynchronous.hub import Hub
from kombu.utils.eventio import READ, poll

from distpool.brokers.redis_poller import LoopAddingReadersOnce, WakeablePoller
from distpool.brokers.redis_transport import TRANSPORT

#: The poll's timeout, which a woken poll must come nowhere near.
TIMEOUT = 5.0
#: A short timeout, which a poll nobody wakes must wait out.
SHORT = 0.5


@pytest.fixture
def poller() -> Iterator[WakeablePoller]:
    poller = WakeablePoller()
    yield poller
    poller.close()


def timed_get(poller: WakeablePoller, timeout: float) -> float:
    """How long ``poller.get`` blocked before it raised Empty."""
    started = time.monotonic()
    with pytest.raises(Empty):
        poller.get(lambda *args: None, timeout=timeout)
    return time.monotonic() - started


def test_a_wake_from_another_thread_ends_a_blocked_poll_at_once(poller):
    timed_get(poller, 0.01)  # what the worker's first poll does: the wake's socket is polled
    waker = threading.Timer(0.2, poller.wake)
    waker.start()
    try:
        assert timed_get(poller, TIMEOUT) < 1
    finally:
        waker.join()


def test_a_wake_before_the_poll_ends_the_next_one_and_only_that_one(poller):
    timed_get(poller, 0.01)
    poller.wake()
    poller.wake()  # two acknowledgements: one wake
    assert timed_get(poller, TIMEOUT) < 1
    assert timed_get(poller, SHORT) >= SHORT * 0.8  # its bytes were read: no spinning


def test_a_poll_nobody_wakes_waits_out_its_timeout(poller):
    for _ in range(2):
        assert timed_get(poller, SHORT) >= SHORT * 0.8


def test_a_channel_event_still_goes_to_its_channel_and_a_wake_to_none(poller):
    handled = []
    channel = SimpleNamespace(_in_poll=False,
                              qos=SimpleNamespace(can_consume=lambda: True),
                              handlers={"BRPOP": lambda: handled.append("BRPOP")})
    theirs, ours = socket.socketpair()
    try:
        poller._fd_to_chan[ours.fileno()] = (channel, "BRPOP")
        poller.poller.register(ours.fileno(), READ)
        timed_get(poller, 0.01)
        poller.wake()
        assert timed_get(poller, TIMEOUT) < 1  # the wake's event: no channel's
        assert handled == []
        theirs.send(b"+OK\r\n")
        poller.get(lambda *args: None, timeout=TIMEOUT)  # the channel's: no Empty
        assert handled == ["BRPOP"]
    finally:
        poller.poller.unregister(ours.fileno())
        del poller._fd_to_chan[ours.fileno()]
        theirs.close()
        ours.close()


def test_on_an_event_loop_waking_does_nothing(poller):
    timed_get(poller, 0.01)  # a poll before the loop starts (as Celery's start-up may do)
    loop_poller = poll()
    try:
        poller.on_poll_init(loop_poller)  # what the transport's register_with_event_loop does
        poller.wake()
        assert not loop_poller.poll(0.1)  # the loop has nothing of the poller's to read
    finally:
        loop_poller.close()


def test_a_closed_poller_wakes_again_once_it_polls_again(poller):
    timed_get(poller, 0.01)
    poller.close()
    poller.wake()  # nothing to wake: not an error
    timed_get(poller, 0.01)  # kombu polls with it again after a reconnection
    poller.wake()
    assert timed_get(poller, TIMEOUT) < 1


def test_the_transport_polls_with_it_and_never_sleeps_between_polls():
    connection = Connection("redis://127.0.0.1:1/0", transport=TRANSPORT,
                            transport_options={"polling_interval": 3})
    transport = connection.transport  # made without connecting
    assert isinstance(transport.cycle, WakeablePoller)
    assert transport.polling_interval is None
    assert transport.brpop_timeout == 3  # the option still paces the blocking move


def test_the_loop_adds_a_reader_once_and_again_once_it_was_removed():
    hub = Hub()
    added: list[int] = []
    add = hub.add
    hub.add = lambda fd, *rest, **options: (added.append(fd), add(fd, *rest, **options))[1]
    loop = LoopAddingReadersOnce(hub)
    reader, writer = socket.socketpair()
    fd = reader.fileno()

    def on_readable(fd: int) -> None: ...

    try:
        for _ in range(3):  # as kombu's transport does on every turn of the loop
            loop.add_reader(fd, on_readable, fd)
        assert added == [fd]
        loop.add_reader(fd, print, fd)  # another callback: recorded
        assert added == [fd, fd] and hub.readers[fd] == (print, (fd,))
        loop.remove(fd)  # (a disconnection: kombu removes the socket's entry)
        loop.add_reader(fd, on_readable, fd)
        assert added == [fd, fd, fd] and loop.on_tick is hub.on_tick
    finally:
        hub.close()
        reader.close()
        writer.close()
