"""The private names of kombu that distpool's Redis transport relies on
(``distpool/brokers/redis_transport.py``, its record of deliveries, ``redis_qos.py``, and its
poller, ``redis_poller.py``) exist, with the parameters it passes or overrides.

kombu is pinned to the versions tested (setup.cfg); a kombu that renames or reshapes one of
these fails here, in the unit tests, instead of in every worker's event loop."""

from __future__ import annotations

import inspect
import re

import pytest
from kombu.asynchronous.hub import Hub
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from distpool.brokers import redis_poller, redis_qos, redis_transport

#: (class, method, its parameters): what the transport's modules override or call.
METHODS = [
    (kombu_redis.Channel, "_brpop_start", ["self", "timeout"]),
    (kombu_redis.Channel, "_brpop_read", ["self", "options"]),
    (kombu_redis.Channel, "_lookup", ["self", "exchange", "routing_key", "default"]),
    (kombu_redis.Channel, "_get_pool", ["self", "asynchronous"]),
    (kombu_redis.Channel, "_disconnect_pools", ["self"]),
    (kombu_redis.Channel, "_connparams", ["self", "asynchronous"]),
    (kombu_redis.Channel, "_create_client", ["self", "asynchronous"]),
    (kombu_redis.Channel, "_do_restore_message",
     ["self", "payload", "exchange", "routing_key", "pipe", "leftmost"]),
    (kombu_redis.Channel, "conn_or_acquire", ["self", "client"]),
    (kombu_redis.QoS, "restore_visible", ["self", "start", "num", "interval"]),
    (kombu_redis.QoS, "restore_by_tag", ["self", "tag", "client", "leftmost"]),
    (kombu_redis.QoS, "_remove_from_indices", ["self", "delivery_tag", "pipe"]),
    (virtual.QoS, "append", ["self", "message", "delivery_tag"]),
    (virtual.QoS, "ack", ["self", "delivery_tag"]),
    (virtual.Transport, "_deliver", ["self", "message", "queue"]),
    (kombu_redis.MultiChannelPoller, "get", ["self", "callback", "timeout"]),
    (kombu_redis.MultiChannelPoller, "handle_event", ["self", "fileno", "event"]),
    (kombu_redis.MultiChannelPoller, "on_poll_init", ["self", "poller"]),
    (kombu_redis.MultiChannelPoller, "close", ["self"]),
    (kombu_redis.Transport, "register_with_event_loop", ["self", "connection", "loop"]),
]
#: (class, attribute): what the transport's modules read or set on kombu's objects,
#: set by the class itself or by the ``__init__`` of one of its bases.
ATTRIBUTES = [
    (kombu_redis.Channel, "_queue_cycle"),
    (kombu_redis.Channel, "_in_poll"),
    (kombu_redis.Channel, "_pool"),
    (kombu_redis.Channel, "_qos"),
    (kombu_redis.Channel, "from_transport_options"),
    (kombu_redis.QoS, "_vrestore_count"),
    (kombu_redis.QoS, "unacked_key"),
    (kombu_redis.QoS, "unacked_index_key"),
    (kombu_redis.MultiChannelPoller, "poller"),
    (kombu_redis.Transport, "cycle"),
    (kombu_redis.Transport, "polling_interval"),
    (Hub, "readers"),
]


@pytest.mark.parametrize("cls, name, parameters", METHODS,
                         ids=[f"{cls.__name__}.{name}" for cls, name, _ in METHODS])
def test_a_private_method_is_there_with_its_parameters(cls, name, parameters):
    assert list(inspect.signature(getattr(cls, name)).parameters) == parameters


@pytest.mark.parametrize("cls, name", ATTRIBUTES,
                         ids=[f"{cls.__name__}.{name}" for cls, name in ATTRIBUTES])
def test_a_private_attribute_is_there(cls, name):
    assigned = re.compile(rf"self\.{name}\s*[:=]")
    assert hasattr(cls, name) or any(
        assigned.search(inspect.getsource(base.__init__)) for base in cls.__mro__
        if "__init__" in vars(base) and base is not object)


def test_the_cycle_of_queues_does_what_the_transport_asks_of_it():
    cycle = kombu_redis.Channel.queue_order_strategy
    from kombu.utils.scheduling import cycle_by_name

    assert {"consume", "rotate"} <= set(dir(cycle_by_name(cycle)))


def test_the_transport_still_overrides_what_it_is_fenced_for():
    # If the transport stops using a name, the fence above should lose it too.
    source = "".join(inspect.getsource(module)
                     for module in (redis_transport, redis_qos, redis_poller))
    for _, name, _ in METHODS:
        assert name in source, name
    for _, name in ATTRIBUTES:
        assert name in source, name


def test_kombu_registers_a_socket_when_it_connects_it_and_adds_its_reader_each_turn():
    # What LoopAddingReadersOnce relies on: the per-turn add only refreshes the hub's entry.
    register = inspect.getsource(kombu_redis.MultiChannelPoller._register)
    assert "self.poller.register(sock" in register
    loop_setup = inspect.getsource(kombu_redis.Transport.register_with_event_loop)
    assert "add_reader = loop.add_reader" in loop_setup
    assert "add_reader(fd, on_readable, fd) for fd in cycle.fds" in loop_setup
    # The reader's callback finds the socket's channel when it is called: an entry recorded
    # for an earlier socket of the same number serves the new one as well.
    assert "self._fd_to_chan" in inspect.getsource(kombu_redis.MultiChannelPoller.on_readable)
