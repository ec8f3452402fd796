"""What a slot's own consumer takes for a message (distpool.brokers.redis_consumer.parse):
the documents distpool's publisher and kombu's producer push, and nothing else."""

from __future__ import annotations

import base64
import json

import pytest

from distpool.brokers.redis_consumer import parse
from distpool.brokers.redis_publisher import message_document
from distpool.wire.messages import TaskMessage
from tests.hostile import HOSTILE_MESSAGES

MESSAGE = TaskMessage("pool:0:0", [{"distpool": 3}], "pool: task 0:0", None, 60.0)


def test_a_published_message_is_taken_as_it_was_sent():
    document = message_document(MESSAGE, "queue", "gen1@host", "tag")
    message = parse(json.dumps(document).encode())
    assert message == document
    assert json.loads(message["body"])[0] == [{"distpool": 3}]


def test_a_body_kombu_encoded_in_base64_is_decoded():
    document = message_document(MESSAGE, "queue", "gen1@host", "tag")
    body = document["body"]
    document["body"] = base64.b64encode(body.encode()).decode()
    document["properties"]["body_encoding"] = "base64"
    message = parse(json.dumps(document).encode())
    assert message is not None and message["body"] == body


@pytest.mark.parametrize("item", [*HOSTILE_MESSAGES, b'"a string"', b'{"headers": [], '
                                  b'"body": "", "properties": {"delivery_info": {}}}'],
                         ids=lambda item: repr(item[:30]))
def test_what_is_not_a_message_is_none(item):
    assert parse(item) is None
