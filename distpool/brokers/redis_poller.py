"""kombu's poller of Redis channels, made wakeable, for workers without an event loop.

Without an event loop (on Windows, where Celery runs its ``synloop``), a worker consumes by
calling ``drain_events`` over and over, and each call blocks in the poller's ``get`` on the
sockets of its channels. A consumer reserves one message at a time: it asks for the next
(see the transport's ``_brpop_start``) only once the last one is acknowledged, and the
acknowledgement comes from the pool's thread. Nothing told the blocked poll, which waited
out its timeout before the next message was asked for: every task waited that long on top of
its own time. Here the acknowledgement wakes the poll (:meth:`WakeablePoller.wake`) through
a socket pair whose read end is polled with the channels' sockets; and the transport does not
sleep between polls (see its ``Transport``), which would only delay the next message again.

With an event loop, the loop polls the channels' sockets itself, calls the poller's ``get``
never, and takes the acknowledgement's next step in its own turn: the socket pair is not made
there (or is let go of once the loop takes over), and waking does nothing. The loop is given
to the transport as :class:`LoopAddingReadersOnce`, which spares every turn of it kombu's
adding of the same readers again.
"""

from __future__ import annotations

import socket
import weakref
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.eventio import READ

#: This process's pollers, for :func:`wake_all`.
_pollers: weakref.WeakSet[WakeablePoller] = weakref.WeakSet()


def stop_all() -> None:
    """The worker is stopping: every poller of this process ends its blocking ``get``, now
    and from now on, as on the end of the consumer's drain timeout, so that the blocking loop
    looks at its state and stops at once instead of after that timeout (2 s, twice: a
    service's stop waited that long). Safe from any thread and from a signal handler."""
    for poller in list(_pollers):
        poller.stopping = True
        poller.wake()


class WakeablePoller(kombu_redis.MultiChannelPoller):
    """kombu's poller of a transport's channels, whose blocking ``get`` another thread can
    end at once: :meth:`wake`."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        # The poller kombu made; an event loop replaces it with its own (on_poll_init).
        self._own_poller = self.poller
        # (read end, write end), registered with _own_poller: made by the first get.
        self._wake_pair: tuple[socket.socket, socket.socket] | None = None
        self.stopping = False  # see stop_all
        _pollers.add(self)

    def wake(self) -> None:
        """End the ``get`` that is blocked now, else the next one, at once (it raises
        ``Empty``, as on a timeout). Safe from any thread; does nothing on an event loop."""
        pair = self._wake_pair
        if pair is None:
            return
        try:
            pair[1].send(b"\0")
        except OSError:  # a wake already pending fills no more (or the pair is closed)
            pass

    def get(self, callback: Any, timeout: float | None = None) -> None:
        if self._wake_pair is None and self.poller is self._own_poller:
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self.poller.register(reader.fileno(), READ)
            self._wake_pair = reader, writer
        try:
            super().get(callback, timeout)  # type: ignore[no-untyped-call]
        except Empty:
            if self.stopping:  # drain_events would poll again until its timeout
                raise socket.timeout() from None
            raise

    def handle_event(self, fileno: int, event: int) -> Any:
        pair = self._wake_pair
        if pair is not None and fileno == pair[0].fileno():
            # A wake, no channel's event: read it away. get goes on with the other events
            # of this poll, then raises Empty if none delivered a message.
            try:
                while pair[0].recv(4096):
                    pass
            except OSError:  # nothing more to read
                pass
            return None
        return super().handle_event(fileno, event)  # type: ignore[no-untyped-call]

    def on_poll_init(self, poller: Any) -> Any:
        self._close_wake_pair()  # an event loop polls from now on
        return super().on_poll_init(poller)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        super().close()  # type: ignore[no-untyped-call]
        # kombu reuses a transport's poller after its connection closes: the next get makes
        # another pair.
        self._close_wake_pair()

    def _close_wake_pair(self) -> None:
        pair, self._wake_pair = self._wake_pair, None
        if pair is not None:
            try:
                self._own_poller.unregister(pair[0].fileno())
            except (KeyError, ValueError):  # as kombu's close: not registered (any more)
                pass
            for end in pair:
                end.close()


class LoopAddingReadersOnce:
    """A worker's event loop (kombu's hub) as the transport is given it, but for one thing.

    kombu adds each of its sockets' readers again on every turn of the loop: a system call
    each (which fails, the socket being registered already) and, on a slot, a hand-over of the
    GIL to the task thread and back, on the way of every task. Registering a socket with the
    poller is done when kombu (re)connects it (``MultiChannelPoller._register``); what the
    per-turn add keeps is the hub's entry for the reader, whose callback looks the socket's
    channel up by its number at each call. So an add that finds the same callback recorded
    for that number changes nothing, and is skipped: even an entry left from an earlier socket
    of that number (kombu before 5.7 does not always remove it) serves the new one, which
    kombu registered with the poller when it connected it."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    def add_reader(self, fd: int, callback: Any, *args: Any) -> Any:
        if self._loop.readers.get(fd) == (callback, args):
            return None
        return self._loop.add_reader(fd, callback, *args)
