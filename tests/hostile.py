"""Bytes that no distpool process writes, for every list and hash distpool reads: anyone who
can reach Redis can put them there. Each once stopped a pool or a slot, or comes close."""

from __future__ import annotations

import json
import os


def nested(depth: int, kind: str = "[") -> bytes:
    """JSON nested ``depth`` deep, unterminated."""
    return (b"[" if kind == "[" else b'{"a":') * depth


#: Result records, for a pool's result list.
HOSTILE_RECORDS = {
    "nested arrays": nested(100_000) + b"\n",
    "nested objects": nested(100_000, "{") + b"\n",
    "nested just under the limit": nested(900) + b"0" + b"]" * 900 + b"\n",
    "nested in a field": b'{"task":"x","ok":true,"elapsed":' + nested(50_000) + b"\n",
    "surrogate task id": b'{"task":"\\ud800","ok":true}\n',
    "surrogate rejection": b'{"task":"x","ok":false,"rejected":"\\udfff"}\n',
    "surrogate encoded as UTF-8": b'{"task":"\xed\xa0\x80","ok":true}\n',
    "not UTF-8": b"\xff\xfe\x00\n\x80",
    "UTF-16": '{"task":"x","ok":true}\n'.encode("utf-16"),
    "a run time of NaN": b'{"task":"x","ok":true,"elapsed":NaN}\n',
    "a run time of 5000 digits": b'{"task":"x","ok":true,"elapsed":' + b"9" * 5000 + b"}\n",
    "a megabyte of header": b'{"task":"' + b"a" * (1 << 20) + b'","ok":true}\n',
    "a megabyte of numbers": b"[" + b"0," * (1 << 20) + b"0]\n",
    "megabytes of garbage": os.urandom(4 << 20),
    "megabytes of newlines": b"\n" * (4 << 20),
    "nothing": b"",
}

#: Items for a task queue, a held list or a delivery record: not kombu messages, or ones
#: that kombu cannot build.
HOSTILE_MESSAGES = [
    nested(100_000) + b"\n",
    b"\xff\xfe\xfd not utf-8",
    b"{}",
    b"[]",
    b"null",
    json.dumps({"properties": {"delivery_tag": "x"}}).encode(),  # no delivery_info
    json.dumps({"body": "!!! not base64", "properties": {
        "delivery_tag": "x", "body_encoding": "base64",
        "delivery_info": {"exchange": "", "routing_key": "q"}}}).encode(),
    b'{"a": "' + b"x" * 3_000_000 + b'"}',  # megabytes of garbage
]
