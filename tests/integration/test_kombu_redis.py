"""The Redis transport that keeps one client object per channel, against a real Redis."""

from __future__ import annotations

import pytest
from kombu import Connection

from distpool.backends import kombu_redis

pytestmark = pytest.mark.integration


def test_a_channel_sends_its_commands_through_one_client_until_its_pool_is_replaced(
        redis_server):
    with Connection(redis_server.url(3), transport=kombu_redis.TRANSPORT) as connection:
        channel = connection.default_channel
        assert isinstance(channel, kombu_redis.Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        channel._pool = None  # what kombu does when it drops its connections
        with channel.conn_or_acquire() as after:
            assert after is not first
            assert after.connection_pool is channel.pool
            after.ping()


def test_messages_published_through_it_are_consumed_in_order(redis_server):
    with (Connection(redis_server.url(3), transport=kombu_redis.TRANSPORT) as connection,
          connection.SimpleQueue("distpool-test-kombu-redis") as simple):
        for n in range(3):
            simple.put({"n": n}, serializer="json")
        received = []
        for _ in range(3):
            message = simple.get(timeout=5)
            received.append(message.payload["n"])
            message.ack()
        assert received == [0, 1, 2]
        with pytest.raises(simple.Empty):
            simple.get(block=False)
