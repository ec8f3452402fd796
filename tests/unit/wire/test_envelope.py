"""Envelopes and result records: their wire format, versions and authentication."""

from __future__ import annotations

import json
import pickle
import time

import pytest

from distpool.errors import AuthenticationError, EnvelopeError, IncompatibleEnvelopeError
from distpool.wire.bundles import BundleRef
from distpool.wire.envelope import ENVELOPE_LIFETIME, PendingBundle, ResultRecord, TaskEnvelope
from distpool.wire.payload import BlobRef, Payload
from distpool.wire.signing import Signer

KEY = Signer(b"the cluster's key")


def _envelope(**overrides):
    fields = dict(pool_id="p1", task_id="p1:0:0", kind="map", function=Payload([b"f"]),
                  arguments=Payload([b"a"]), initializer=None, max_tasks=None)
    fields.update(overrides)
    return TaskEnvelope(**fields)


def test_envelope_round_trip_is_json_compatible():
    envelope = _envelope(initializer=Payload([b"\x00init"]), max_tasks=3)
    wire = json.loads(json.dumps(envelope.to_wire(KEY)))
    assert TaskEnvelope.from_wire(wire, KEY) == envelope


@pytest.mark.parametrize("field, value", [
    ("python", "2.7"), ("dill", "0.0.1"), ("distpool", 99)])
def test_envelope_from_another_version_names_its_task(field, value):
    wire = _envelope().to_wire(KEY)
    wire[field] = value
    with pytest.raises(IncompatibleEnvelopeError) as info:
        TaskEnvelope.from_wire(wire, KEY)
    assert info.value.pool_id == "p1" and info.value.task_id == "p1:0:0"
    assert "same Python minor version and the same dill version" in str(info.value)
    # It travels back to the client as a task's error.
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.pool_id, copy.task_id, str(copy)) == ("p1", "p1:0:0", str(info.value))


@pytest.mark.parametrize("message", [
    None, "text", [], {}, {"distpool": 1}, {"distpool": 1, "pool": 1, "task": "t"}])
def test_malformed_envelopes_are_refused(message):
    with pytest.raises(EnvelopeError):
        TaskEnvelope.from_wire(message, KEY)


@pytest.mark.parametrize("field, value", [
    ("function", "not base64!"), ("arguments", None), ("kind", "exec"), ("max_tasks", 0),
    ("expires", "tomorrow"), ("bundles", None), ("bundles", [{"name": "x"}]),
    ("bundles", [["../x", "ab" * 32, 1]]), ("bundles", [["x", "zz", 1]]),
    ("bundles", [["x", "ab" * 32, -1]]), ("bundles", [["x", "ab" * 32]]),
    ("versions", {"numpy": "1"}), ("versions", [["numpy"]]), ("versions", [["numpy", 1]]),
    ("versions", [["numpy", "x" * 201]]), ("strict_versions", "yes")])
def test_envelopes_with_bad_fields_are_refused_naming_their_task(field, value):
    wire = _envelope().to_wire(KEY)
    wire[field] = value
    with pytest.raises(EnvelopeError) as info:
        TaskEnvelope.from_wire(wire, KEY)
    assert info.value.task_id == "p1:0:0"


def test_wrong_key_is_refused():
    wire = _envelope().to_wire(KEY)
    with pytest.raises(AuthenticationError, match="does not match"):
        TaskEnvelope.from_wire(wire, Signer(b"another key"))


def test_unsigned_envelope_is_refused_by_a_keyed_worker():
    wire = _envelope().to_wire(Signer(None))
    assert wire["signature"] is None
    with pytest.raises(AuthenticationError, match="not signed"):
        TaskEnvelope.from_wire(wire, KEY)


@pytest.mark.parametrize("field, value", [
    ("arguments", "ZXZpbA=="), ("function", "ZXZpbA=="), ("kind", "apply"),
    ("initializer", "ZXZpbA=="), ("max_tasks", 7)])
def test_tampered_envelope_is_refused(field, value):
    wire = _envelope().to_wire(KEY)
    wire[field] = value
    with pytest.raises(AuthenticationError):
        TaskEnvelope.from_wire(wire, KEY)


@pytest.mark.parametrize("field, value", [("task", "p1:0:1"), ("pool", "p2")])
def test_envelope_replayed_as_another_task_or_pool_is_refused(field, value):
    wire = _envelope().to_wire(KEY)
    wire[field] = value
    with pytest.raises(AuthenticationError):
        TaskEnvelope.from_wire(wire, KEY)


def test_expired_envelope_is_refused_and_its_expiry_cannot_be_extended():
    sent = time.time() - ENVELOPE_LIFETIME - 1
    wire = _envelope().to_wire(KEY, now=sent)
    with pytest.raises(AuthenticationError, match="expired"):
        TaskEnvelope.from_wire(wire, KEY)
    wire["expires"] = time.time() + 3600
    with pytest.raises(AuthenticationError, match="signature"):
        TaskEnvelope.from_wire(wire, KEY)


def test_without_a_key_nothing_is_signed_or_checked():
    insecure = Signer(None)
    wire = _envelope().to_wire(KEY)
    assert TaskEnvelope.from_wire(wire, insecure) == _envelope()


def test_result_record_round_trip():
    record = ResultRecord("p:1:2", False, Payload([b"\x80payload\nwith newline"]), 0.25)
    assert ResultRecord.from_bytes(record.to_bytes(KEY, "p"), KEY, "p") == record


def test_result_record_is_bound_to_its_pool_and_key():
    raw = ResultRecord("p:1:2", True, Payload([b"payload"])).to_bytes(KEY, "p")
    with pytest.raises(AuthenticationError) as info:
        ResultRecord.from_bytes(raw, KEY, "another pool")
    assert info.value.task_id == "p:1:2"
    with pytest.raises(AuthenticationError):
        ResultRecord.from_bytes(raw, Signer(b"another key"), "p")
    tampered = raw[:-1] + b"!"
    with pytest.raises(AuthenticationError):
        ResultRecord.from_bytes(tampered, KEY, "p")


def test_rejection_carries_no_payload_and_needs_no_signature():
    raw = ResultRecord.rejection("p:0:0", "bad signature").to_bytes(KEY, "p")
    record = ResultRecord.from_bytes(raw, KEY, "p")
    assert (record.rejected, record.payload) == ("bad signature", Payload([b""]))
    with pytest.raises(EnvelopeError):
        ResultRecord.from_bytes(raw + b"payload smuggled in", KEY, "p")


@pytest.mark.parametrize("raw", [b"", b"no header", b"{}\n", b'{"task": 1, "ok": true}\nx',
                                 b"\xff\xfe\n", b'{"task": "t", "ok": "yes"}\n'])
def test_malformed_result_records_are_refused(raw):
    with pytest.raises(EnvelopeError):
        ResultRecord.from_bytes(raw, KEY, "p")


# -- payloads that travel as blobs ---------------------------------------------------------

BLOB = BlobRef("ab" * 32, 5 * 2**20)


def test_an_envelope_carries_and_signs_blob_references():
    envelope = _envelope(arguments=BLOB, function=BlobRef("cd" * 32, 4096))
    wire = json.loads(json.dumps(envelope.to_wire(KEY)))
    assert wire["arguments"] == {"blob": "ab" * 32, "size": 5 * 2**20}
    assert TaskEnvelope.from_wire(wire, KEY) == envelope
    for field, value in (("blob", "ef" * 32), ("size", 5 * 2**20 + 1)):
        forged = json.loads(json.dumps(wire))
        forged["arguments"][field] = value  # another blob, or the same one longer
        with pytest.raises(AuthenticationError):
            TaskEnvelope.from_wire(forged, KEY)


@pytest.mark.parametrize("reference", [
    {"blob": "ab" * 32}, {"size": 10}, {"blob": "AB" * 32, "size": 10},
    {"blob": "ab" * 31, "size": 10}, {"blob": "xy" * 32, "size": 10},
    {"blob": "ab" * 32, "size": 0}, {"blob": "ab" * 32, "size": -1},
    {"blob": "ab" * 32, "size": True}, {"blob": "ab" * 32, "size": 1.5},
    {"blob": "ab" * 32, "size": 2**60}, {"blob": "ab" * 32, "size": 10, "extra": 1},
    {"blob": ["ab"], "size": 10},
])
def test_malformed_blob_references_are_refused_naming_their_task(reference):
    wire = _envelope().to_wire(KEY)
    wire["arguments"] = reference
    with pytest.raises(EnvelopeError, match="blob reference") as info:
        TaskEnvelope.from_wire(wire, KEY)
    assert info.value.task_id == "p1:0:0"


def test_a_result_record_carries_and_signs_a_blob_reference():
    raw = ResultRecord("p:1:2", True, BLOB, 0.5).to_bytes(KEY, "p")
    assert raw.endswith(b"\n")  # the payload is elsewhere
    assert ResultRecord.from_bytes(raw, KEY, "p") == ResultRecord("p:1:2", True, BLOB, 0.5)
    with pytest.raises(AuthenticationError):
        ResultRecord.from_bytes(raw.replace(b"ab" * 32, b"ef" * 32), KEY, "p")
    with pytest.raises(EnvelopeError, match="a blob and a payload"):
        ResultRecord.from_bytes(raw + b"smuggled", KEY, "p")


def test_bundles_and_versions_travel_signed():
    ref = BundleRef("forecast", "ab" * 32, 552)
    envelope = _envelope(bundles=(ref,), versions=(("numpy", "2.1.0"),), strict_versions=True)
    wire = json.loads(json.dumps(envelope.to_wire(KEY)))
    assert TaskEnvelope.from_wire(wire, KEY) == envelope
    for field, value in [("bundles", [["forecast", "cd" * 32, 552]]),
                         ("versions", [["numpy", "1.26.4"]]), ("strict_versions", False)]:
        forged = {**wire, field: value}
        with pytest.raises(AuthenticationError):
            TaskEnvelope.from_wire(forged, KEY)


def test_a_bundle_travels_as_the_reference_to_its_archive():
    archive = Payload([b"the zip"])
    wire = _envelope(bundles=(PendingBundle("forecast", archive),)).to_wire(KEY)
    assert TaskEnvelope.from_wire(wire, KEY).bundles == (
        BundleRef("forecast", archive.digest, archive.nbytes),)


def test_a_records_warnings_travel_signed():
    record = ResultRecord("p1:0:0", True, Payload([b"P"]), 0.5,
                          warnings=("numpy is 2.1.0 on the client but is 1.26.4 on worker "
                                    "host w1",))
    raw = record.to_bytes(KEY, "p1")
    assert ResultRecord.from_bytes(raw, KEY, "p1") == record
    forged = raw.replace(b"1.26.4", b"1.26.5")
    with pytest.raises(AuthenticationError):
        ResultRecord.from_bytes(forged, KEY, "p1")
