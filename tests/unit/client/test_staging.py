"""The client's ledger of blobs: written once while held, deleted when nobody holds them,
a callable's kept for reuse within a budget, and never deleted after it is held again."""

from __future__ import annotations

from distpool.client.staging import BlobLedger
from distpool.wire.payload import BlobRef

ARGS = BlobRef("a" * 64, 100)
FUNCTION = BlobRef("f" * 64, 300)


def deleted(ledger: BlobLedger) -> set[BlobRef]:
    found: set[BlobRef] = set()
    ledger.drop_unused(found.update)
    return found


def test_a_blob_is_written_once_and_deleted_when_its_last_holder_finishes():
    ledger = BlobLedger()
    assert ledger.hold("m1", ARGS) is True
    assert ledger.hold("m2", ARGS) is False  # the same bytes: already in the store
    ledger.release(["m1"])
    assert deleted(ledger) == set()
    ledger.release(["m2"])
    assert deleted(ledger) == {ARGS}
    assert ledger.hold("m3", ARGS) is True  # gone: written again


def test_a_blob_released_then_held_before_its_deletion_is_neither_deleted_nor_rewritten():
    ledger = BlobLedger()
    ledger.hold("m1", ARGS)
    ledger.release(["m1"])
    assert ledger.hold("m2", ARGS) is False
    assert deleted(ledger) == set()


def test_callables_are_kept_for_reuse_within_the_budget_oldest_out_first():
    ledger = BlobLedger(keep_bytes=500)
    other = BlobRef("e" * 64, 300)
    ledger.hold("m1", FUNCTION, reusable=True)
    ledger.release(["m1"])
    assert deleted(ledger) == set()
    assert ledger.hold("m2", FUNCTION, reusable=True) is False  # kept: nothing to write
    ledger.release(["m2"])
    ledger.hold("m3", other, reusable=True)
    ledger.release(["m3"])  # 600 bytes kept: over budget, the older one goes
    assert deleted(ledger) == {FUNCTION}
    too_big = BlobRef("d" * 64, 501)
    ledger.hold("m4", too_big, reusable=True)
    ledger.release(["m4"])
    assert deleted(ledger) == {too_big}


def test_releasing_twice_or_unknown_messages_is_harmless():
    ledger = BlobLedger()
    ledger.hold("m1", ARGS)
    ledger.release(["m1", "m1", "never"])
    ledger.release(["m1"])
    assert deleted(ledger) == {ARGS}
