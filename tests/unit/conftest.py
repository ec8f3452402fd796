"""Fixtures for the unit tests: nothing here needs a service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import distpool


@pytest.fixture
def eager_pool() -> Iterator[distpool.Pool]:
    """A pool of 2 that runs its tasks in this process."""
    pool = distpool.Pool(2, eager=True)
    yield pool
    pool.terminate()
    pool.join()
