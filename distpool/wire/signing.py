"""Signatures under the cluster's shared key: HMAC-SHA256 over a list of fields, compared with
:func:`hmac.compare_digest`. Without a key (``insecure``), nothing is signed or checked."""

from __future__ import annotations

import hmac
from typing import Any

from ..errors import AuthenticationError


class Signer:
    """HMAC-SHA256 under the cluster's key; with no key, signs and checks nothing."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key

    def sign(self, *fields: bytes | memoryview) -> str | None:
        if self._key is None:
            return None
        # Length-prefixed, so that no two different field lists read the same; joined, to be
        # hashed in one call (the fields are small: large payloads are signed as references).
        data = b"".join([part for field in fields
                         for part in (len(field).to_bytes(8, "big"), field)])
        return hmac.digest(self._key, data, "sha256").hex()

    def check(self, signature: Any, *fields: bytes | memoryview) -> None:
        """Raise :class:`AuthenticationError` unless ``signature`` is right for ``fields``."""
        if self._key is None:
            return
        if not isinstance(signature, str):
            raise AuthenticationError("the message is not signed")
        expected = self.sign(*fields)
        assert expected is not None
        if not hmac.compare_digest(signature.encode("ascii", "replace"), expected.encode()):
            raise AuthenticationError("the message's signature does not match this key")
