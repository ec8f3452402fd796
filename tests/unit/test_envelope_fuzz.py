"""Property-based fuzzing of the decoders: random and bit-flipped input never raises anything
but distpool's own error, and never reaches an unpickler."""

from __future__ import annotations

import json
import pickle

import dill
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distpool import serialization
from distpool.envelope import ResultRecord, Signer, TaskEnvelope
from distpool.errors import EnvelopeError

KEY = Signer(b"fuzzing key")
VALID = TaskEnvelope("pool", "pool:0:0", "apply", serialization.dumps(len),
                     serialization.dumps(((), {}))).to_wire(KEY)
VALID_JSON = json.dumps(VALID).encode()
VALID_RECORD = ResultRecord("pool:0:0", True, serialization.dumps(42)).to_bytes(KEY, "pool")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=10), children, max_size=4),
    max_leaves=12)


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a decoder tried to unpickle")

    for module, name in ((pickle, "loads"), (pickle, "Unpickler"), (dill, "loads"),
                         (dill, "Unpickler")):
        monkeypatch.setattr(module, name, refuse)


def flip(data: bytes, positions: list[int]) -> bytes:
    mutable = bytearray(data)
    for position in positions:
        mutable[position % len(mutable)] ^= 1 << (position % 8)
    return bytes(mutable)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_messages_raise_only_envelope_errors(message):
    try:
        TaskEnvelope.from_wire(message, KEY)
    except EnvelopeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(VALID)), json_values, max_size=6))
def test_valid_envelopes_with_fields_replaced_are_refused(changes):
    assert_refused_or_unchanged({**VALID, **changes})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0), min_size=1, max_size=4))
def test_bit_flipped_envelopes_are_refused(positions):
    raw = flip(VALID_JSON, positions)
    try:
        message = json.loads(raw)
    except ValueError:
        return  # not even JSON: Celery would not deliver it
    assert_refused_or_unchanged(message)


def assert_refused_or_unchanged(message):
    """Refused with distpool's own error, or accepted only if nothing that matters changed."""
    try:
        envelope = TaskEnvelope.from_wire(message, KEY)
    except EnvelopeError:
        return
    assert envelope == TaskEnvelope.from_wire(VALID, KEY)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_result_records_raise_only_envelope_errors(raw):
    try:
        ResultRecord.from_bytes(raw, KEY, "pool")
    except EnvelopeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0), min_size=1, max_size=4))
def test_bit_flipped_result_records_are_refused(positions):
    raw = flip(VALID_RECORD, positions)
    try:
        record = ResultRecord.from_bytes(raw, KEY, "pool")
    except EnvelopeError:
        return
    assert record == ResultRecord.from_bytes(VALID_RECORD, KEY, "pool")
