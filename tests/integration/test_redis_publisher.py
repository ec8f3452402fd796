"""The client's own publisher on a Redis broker: what it pushes is what Celery and kombu push,
and a first pool in a fresh process works without them."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
import textwrap
import time

import redis

from distpool.brokers.celery_app import revoke
from distpool.brokers.celery_publisher import CeleryPublisher
from distpool.brokers.redis_publisher import RedisPublisher
from distpool.config import resolve
from distpool.wire.messages import TaskMessage
from tests.support import environment_without_distpool

ENVELOPE = {"distpool": 2, "pool": "p", "task": "p:0:0", "expires": 1796138986.869,
            "function": "UIAFlRQ=", "initializer": None, "max_tasks": None, "signature": "ab"}
MESSAGES = [
    TaskMessage("p:0:0", [ENVELOPE], "<distpool task p:0:0>", None, None),
    TaskMessage("p:1:0", [ENVELOPE, {**ENVELOPE, "task": "p:1:1", "kind": "map"}],
                "<distpool task p:1:0 and 1 more>", 14.0, 19.0),
    TaskMessage("p:2:0", [{**ENVELOPE, "text": "é\u2028\"\\"}], "<distpool task p:2:0>", 7, 12),
    TaskMessage("p:3:0", [ENVELOPE], "pool p: task 3:0, arguments 12 bytes", None, None,
                shadow="forecast.simulate"),
]


def pushed(client: redis.Redis, key: str) -> list[dict]:
    """The documents on list ``key``, oldest first, without their random delivery tags."""
    documents = [json.loads(item) for item in reversed(client.lrange(key, 0, -1))]
    for document in documents:
        assert len(document["properties"].pop("delivery_tag")) == 36  # a UUID, each its own
    return documents


def test_what_it_pushes_is_what_celery_pushes_key_for_key(redis_server):
    url = redis_server.url(6)
    client = redis.Redis.from_url(url)
    client.flushdb()
    settings = resolve(broker=url, queue="celery-sent", secret="k" * 32, environ={})
    # Celery's own publishing (the AMQP publisher's way) onto a Redis broker, as the workers'
    # kombu would receive it: what distpool's Redis publisher must write.
    celery = CeleryPublisher(settings)
    own = RedisPublisher(dataclasses.replace(settings, queue="own-sent"))
    try:
        celery.publish(MESSAGES)
        own.publish(MESSAGES)
        theirs, ours = pushed(client, "celery-sent"), pushed(client, "own-sent")
    finally:
        celery.close()
        own.close()
    for document in theirs:
        document["properties"]["delivery_info"]["routing_key"] = "own-sent"
        # The one difference by design: the body as it is, not base64-encoded again.
        assert document["properties"].pop("body_encoding") == "base64"
        document["body"] = base64.b64decode(document["body"]).decode("utf-8")
    # Equal, and in the same order: the JSON text differs only by the delivery tag.
    assert [json.dumps(document) for document in ours] == [
        json.dumps(document) for document in theirs]
    assert set(client.keys("*")) == {b"celery-sent", b"own-sent"}


def test_a_first_pool_in_a_fresh_process_runs_without_celery_or_kombu(shared_cluster):
    script = textwrap.dedent("""
        import sys
        import distpool

        with distpool.Pool(2) as pool:
            assert pool.apply(len, ("abc",)) == 3
            assert pool.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]
        assert not {"celery", "kombu"} & set(sys.modules), sorted(sys.modules)
        print("ok")
    """)
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env=environment_without_distpool(**shared_cluster.environment()))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"


def test_its_revoke_is_what_celery_broadcasts_key_for_key(redis_server):
    url = redis_server.url(6)
    client = redis.Redis.from_url(url)
    settings = resolve(broker=url, queue="revoked", secret="k" * 32, environ={})
    subscription = client.pubsub()
    subscription.psubscribe("*")
    assert subscription.get_message(timeout=5)["type"] == "psubscribe"
    own = RedisPublisher(settings)
    try:
        revoke(settings, ["p:0:0", "p:1:0"])  # Celery's, as the AMQP publisher revokes
        own.revoke(["p:0:0", "p:1:0"])
        sent = [subscription.get_message(timeout=5) for _ in range(2)]
    finally:
        own.close()
        subscription.close()
    assert {message["channel"] for message in sent} == {b"/6.celery.pidbox"}
    theirs, ours = (json.loads(message["data"]) for message in sent)
    for document in (theirs, ours):
        assert len(document["properties"].pop("delivery_tag")) == 36
        assert abs(document["headers"].pop("expires") - (time.time() + 1)) < 5
    # The one difference by design: the body as it is, not base64-encoded again.
    assert theirs["properties"].pop("body_encoding") == "base64"
    theirs["body"] = base64.b64decode(theirs["body"]).decode("utf-8")
    assert json.dumps(ours) == json.dumps(theirs)


def test_terminating_a_pool_with_tasks_running_revokes_them_without_celery(shared_cluster):
    # That the revoke stops them: test_a_slot_running_a_revoked_task_ends_while_its_pool_lives
    # (tests/integration/test_cluster.py). Here, that Celery is not imported to send it.
    script = textwrap.dedent("""
        import sys, time
        import distpool

        pool = distpool.Pool(2)
        results = [pool.apply_async(time.sleep, (60,)) for _ in range(2)]
        time.sleep(1)
        started = time.monotonic()
        pool.terminate()
        assert not {"celery", "kombu"} & set(sys.modules), sorted(sys.modules)
        print(round(time.monotonic() - started))
    """)
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env=environment_without_distpool(**shared_cluster.environment()))
    assert completed.returncode == 0, completed.stderr
    assert int(completed.stdout) < 30
