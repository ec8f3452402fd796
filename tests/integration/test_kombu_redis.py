"""The Redis transport that keeps one client object per channel, against a real Redis."""

from __future__ import annotations

import uuid

import kombu.transport.redis
import pytest
import redis
from kombu import Connection

import distpool
from distpool.brokers import redis_transport as kombu_redis

pytestmark = pytest.mark.integration


def test_a_channel_sends_its_commands_through_one_client(redis_server):
    with Connection(redis_server.url(3), transport=kombu_redis.TRANSPORT) as connection:
        channel = connection.default_channel
        assert isinstance(channel, kombu_redis.Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool
            first.ping()


def test_the_channels_of_a_process_share_one_pool_of_command_connections(redis_server):
    with (Connection(redis_server.url(3), transport=kombu_redis.TRANSPORT) as one,
          Connection(redis_server.url(3), transport=kombu_redis.TRANSPORT) as other,
          Connection(redis_server.url(4), transport=kombu_redis.TRANSPORT) as elsewhere):
        consumer, remote_control = one.default_channel, one.channel()
        assert consumer.pool is remote_control.pool is other.default_channel.pool
        assert elsewhere.default_channel.pool is not consumer.pool  # another database
        assert consumer.async_pool is not remote_control.async_pool  # blocking waits: own
        pool = consumer.pool
        held = pool.get_connection()  # in use by one channel (a QoS keeps one so)
        held.send_command("PING")
        assert held.read_response() in (b"PONG", "PONG")
        with consumer.conn_or_acquire() as client:
            client.ping()  # an idle one, now
        remote_control._disconnect_pools()  # what kombu does when that channel closes
        held.send_command("PING")  # the one in use elsewhere was left alone
        assert held.read_response() in (b"PONG", "PONG")
        pool.release(held)
        assert remote_control.pool is pool  # a new one for the channel: the same pool
        with consumer.conn_or_acquire() as client:
            assert client.ping()


def test_its_connections_name_distpool_to_redis(redis_server):
    with Connection(redis_server.url(3), transport=kombu_redis.TRANSPORT) as connection:
        channel = connection.default_channel
        for pool in (channel.pool, channel.async_pool):
            identity = pool.connection_kwargs["driver_info"]
            assert identity.formatted_name == f"redis-py(distpool_v{distpool.__version__})"
            assert identity.lib_version == redis.__version__


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


def unique_queue():
    return f"distpool-test-kombu-qos-{uuid.uuid4().hex[:8]}"


def test_a_delivery_record_is_applied_before_its_acknowledgement_removes_it(redis_server):
    plain = redis.Redis.from_url(redis_server.url(4))
    with (Connection(redis_server.url(4), transport=kombu_redis.TRANSPORT) as connection,
          connection.SimpleQueue(unique_queue()) as simple):
        simple.put({"n": 1}, serializer="json")
        message = simple.get(timeout=5)
        simple.channel.qos.confirm()  # what a restore does before it reads the records
        tag = message.delivery_tag
        assert plain.hexists("unacked", tag) and plain.zscore("unacked_index", tag)
        message.ack()
        assert not plain.hexists("unacked", tag) and plain.zscore("unacked_index", tag) is None


def test_a_record_sent_on_a_connection_the_broker_dropped_is_sent_again(redis_server):
    plain = redis.Redis.from_url(redis_server.url(4))
    with (Connection(redis_server.url(4), transport=kombu_redis.TRANSPORT) as connection,
          connection.SimpleQueue(unique_queue()) as simple):
        for n in range(2):
            simple.put({"n": n}, serializer="json")
        first = simple.get(timeout=5)
        qos = simple.channel.qos
        qos.confirm()
        [own] = qos._connection.run([("CLIENT", "ID")])
        plain.client_kill_filter(_id=own)
        second = simple.get(timeout=5)  # its record goes out on the dead connection
        qos.confirm()  # finds it dead: a new connection, the record sent again
        assert {first.delivery_tag, second.delivery_tag} == {
            tag.decode() for tag in plain.hkeys("unacked")}
        first.ack()
        second.ack()
        assert plain.hlen("unacked") == 0 and plain.zcard("unacked_index") == 0


def test_a_message_held_when_the_channel_closes_goes_back_on_the_queue(redis_server):
    url, queue = redis_server.url(4), unique_queue()
    with (Connection(url, transport=kombu_redis.TRANSPORT) as connection,
          connection.SimpleQueue(queue) as simple):
        simple.put({"n": 7}, serializer="json")
        simple.get(timeout=5)  # received, never acknowledged
    with (Connection(url, transport=kombu_redis.TRANSPORT) as connection,
          connection.SimpleQueue(queue) as simple):
        message = simple.get(timeout=5)
        assert message.payload == {"n": 7}
        message.ack()


def test_consumers_that_take_turns_sweep_at_one_call_in_their_number(redis_server,
                                                                      monkeypatch):
    swept = []
    monkeypatch.setattr(kombu.transport.redis.QoS, "restore_visible",
                        lambda self, *args, **kwargs: swept.append(self))
    with Connection(redis_server.url(3), transport=kombu_redis.TRANSPORT,
                    transport_options={"distpool_sweepers": 4}) as connection:
        qos = connection.default_channel.qos
        for _ in range(40):
            qos.restore_visible()
    assert len(swept) == 10
