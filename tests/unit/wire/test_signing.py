"""The cluster key's signatures, alone (the envelope tests sign through the wire format)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from distpool.errors import AuthenticationError
from distpool.wire.signing import Signer

KEY = b"the cluster's key"


def test_a_signature_is_hmac_sha256_over_the_length_prefixed_fields():
    # The format both sides compute: a change here is a change of the wire format.
    fields = (b"pool", b"", b"task:0:0", memoryview(b"payload"))
    framed = b"".join(len(field).to_bytes(8, "big") + bytes(field) for field in fields)
    assert Signer(KEY).sign(*fields) == hmac.new(KEY, framed, hashlib.sha256).hexdigest()


def test_fields_that_join_to_the_same_bytes_sign_differently():
    signer = Signer(KEY)
    assert signer.sign(b"ab", b"c") != signer.sign(b"a", b"bc")
    assert signer.sign(b"abc") != signer.sign(b"abc", b"")


def test_a_signature_is_checked_against_its_fields_and_key():
    signer = Signer(KEY)
    signature = signer.sign(b"pool", b"task")
    signer.check(signature, b"pool", b"task")
    with pytest.raises(AuthenticationError, match="does not match"):
        signer.check(signature, b"pool", b"another task")
    with pytest.raises(AuthenticationError, match="does not match"):
        Signer(b"another key").check(signature, b"pool", b"task")
    with pytest.raises(AuthenticationError, match="not signed"):
        signer.check(None, b"pool", b"task")
    with pytest.raises(AuthenticationError, match="does not match"):
        signer.check("\u00e9" * 64, b"pool", b"task")  # not ASCII: refused, not an error


def test_without_a_key_nothing_is_signed_or_checked():
    insecure = Signer(None)
    assert insecure.sign(b"pool", b"task") is None
    insecure.check(None, b"pool", b"task")
    insecure.check("anything", b"pool", b"task")
