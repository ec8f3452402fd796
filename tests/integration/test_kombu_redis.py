"""The Redis transport that keeps one client object per channel, against a real Redis."""

from __future__ import annotations

import pytest
from kombu import Connection

from distpool.backends import celery_backend, kombu_redis
from distpool.config import resolve

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


@pytest.mark.parametrize(("broker", "transport"), [
    ("redis://127.0.0.1:6379/0", kombu_redis.TRANSPORT),
    # kombu derives TLS and AMQP settings from the URL's scheme: left to it.
    ("rediss://127.0.0.1:6380/0", None),
    ("amqp://guest:guest@127.0.0.1:5672//", None),
])
def test_the_app_uses_it_for_plain_redis_brokers_only(broker, transport):
    settings = resolve(broker=broker, result_url="redis://127.0.0.1:6379/0",
                       secret="k" * 32, environ={})
    assert celery_backend.create_app(settings).conf.broker_transport == transport
