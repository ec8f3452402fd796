"""pytest plugin, registered by installing distpool: the ``distpool_eager`` fixture.

    def test_my_job(distpool_eager):
        with distpool.Pool(2) as pool:    # runs in-process: no broker, no workers
            assert pool.map(work, [1, 2]) == [...]
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def distpool_eager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make every ``distpool.Pool`` created in the test run its tasks in this process.

    Tasks still go through distpool's serialisation and its worker code, so a function or an
    argument that could not travel to a real worker fails here too.
    """
    monkeypatch.setenv("DISTPOOL_EAGER", "1")
    yield
