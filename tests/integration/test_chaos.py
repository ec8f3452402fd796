"""Chaos at CI size: slots SIGKILLed and SIGSTOPped at random moments, idle ones included,
and a whole node killed and replaced, during a chunksize=1 imap_unordered. The soak is
``python -m benchmarks.chaos``."""

from __future__ import annotations

import pytest

from benchmarks.chaos import run

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_every_result_comes_back_exactly_once_whatever_dies():
    figures = run(tasks=12000, nodes=3, slots=2, stall=60, node_kill_after=4)
    assert figures["node_kills"] == 1, figures
    assert figures["slot_kills"] + figures["slot_freezes"] >= 2, figures
    assert not figures["stalled"], figures
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures
