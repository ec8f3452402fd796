"""Property-based fuzzing of the decoders: random and bit-flipped input never raises anything
but distpool's own error, and never reaches an unpickler."""

from __future__ import annotations

import json
import pickle

import dill
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distpool.errors import EnvelopeError
from distpool.wire import serialization
from distpool.wire.envelope import ResultRecord, TaskEnvelope
from distpool.wire.signing import Signer
from tests.hostile import HOSTILE_RECORDS, nested

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


# -- structure, not only random bytes: what a hostile writer to the broker or the result list
# would try. The result list is read by the client's collector thread, which must survive it.

#: Text as JSON may carry it: lone surrogates included ("\ud800" is valid JSON).
any_text = st.lists(st.characters(categories=["Cs"]) | st.characters(),
                   max_size=20).map("".join)
hostile_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text
    | st.integers(min_value=10 ** 300, max_value=10 ** 4000),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        any_text, children, max_size=4),
    max_leaves=12)
#: A result header's fields, each with what it should hold or anything else.
hostile_headers = st.fixed_dictionaries(
    {"task": any_text | hostile_values, "ok": st.booleans() | hostile_values},
    optional={"elapsed": st.floats() | hostile_values, "rejected": any_text | hostile_values,
              "signature": any_text | hostile_values, "": hostile_values})


def deep(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def at_stack_depth(depth: int, function):
    """Call ``function`` with ``depth`` more frames on the stack, as a worker's decoder runs
    deep inside Celery."""
    return function() if depth <= 0 else at_stack_depth(depth - 1, function)


@pytest.mark.parametrize("raw", HOSTILE_RECORDS.values(), ids=HOSTILE_RECORDS.keys())
def test_hostile_result_records_raise_only_envelope_errors(raw):
    with pytest.raises(EnvelopeError):
        ResultRecord.from_bytes(raw, KEY, "pool")


@pytest.mark.parametrize("elapsed", ["NaN", "Infinity", "1e308"])
def test_run_times_that_would_poison_the_batching_means_are_refused(elapsed):
    # Even without a key (insecure), where nothing else would refuse the record.
    raw = b'{"task":"x","ok":true,"elapsed":%s}\npayload' % elapsed.encode()
    with pytest.raises(EnvelopeError, match="run time"):
        ResultRecord.from_bytes(raw, Signer(None), "pool")


def test_a_hostile_record_is_refused_even_deep_in_the_stack():
    raw = nested(900) + b"]" * 900 + b"\n"
    with pytest.raises(EnvelopeError):
        at_stack_depth(500, lambda: ResultRecord.from_bytes(raw, KEY, "pool"))


@settings(max_examples=300, deadline=None)
@given(hostile_headers, st.binary(max_size=50))
def test_structured_result_headers_raise_only_envelope_errors(header, payload):
    raw = json.dumps(header).encode() + b"\n" + payload
    try:
        ResultRecord.from_bytes(raw, KEY, "pool")
    except EnvelopeError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[", "{"]),
       st.booleans(), st.integers(min_value=0, max_value=2000))
def test_nested_headers_raise_only_envelope_errors(depth, kind, closed, stack):
    raw = nested(depth, kind) + (b"0" + (b"]" if kind == "[" else b"}") * depth
                                 if closed else b"") + b"\n"
    with pytest.raises(EnvelopeError):
        at_stack_depth(stack % 600, lambda: ResultRecord.from_bytes(raw, KEY, "pool"))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["pool", "task", "function", "arguments",
                                        "initializer", "signature"]), any_text, max_size=3),
       st.dictionaries(st.sampled_from(sorted(VALID)), hostile_values, max_size=2))
def test_valid_envelopes_with_hostile_fields_are_refused(texts, changes):
    assert_refused_or_unchanged({**VALID, **texts, **changes})


@pytest.mark.parametrize("field", ["pool", "task"])
def test_envelopes_with_ids_that_cannot_be_signed_are_refused(field):
    with pytest.raises(EnvelopeError):
        TaskEnvelope.from_wire({**VALID, field: "\ud800"}, KEY)


@pytest.mark.parametrize("field", ["distpool", "python", "dill", "kind", "max_tasks"])
def test_deeply_nested_fields_are_refused_even_deep_in_the_stack(field):
    # As deep as JSON decoding produces, with a decoder's depth of stack below.
    message = {**VALID, field: deep(900)}
    with pytest.raises(EnvelopeError) as info:
        at_stack_depth(300, lambda: TaskEnvelope.from_wire(message, KEY))
    assert len(str(info.value)) < 1000  # a short message, however big the field
