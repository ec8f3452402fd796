"""CPython's own Pool tests (``Lib/test/_test_multiprocessing.py``) run against distpool.

``_TestPool`` is used unchanged, with ``Pool`` pointing at distpool on real workers. The
tests that inspect ``multiprocessing.Pool``'s private worker list are skipped. The other
Pool test classes there call ``multiprocessing.Pool`` by name rather than ``self.Pool``;
their bodies are in test_pool_contract.py, run against both pools.
"""

from __future__ import annotations

import unittest

import pytest

from tests.compat.conftest import distpool_pool

cpython = pytest.importorskip(
    "test._test_multiprocessing", reason="CPython's test package is not installed")


class DistpoolMixin(cpython.BaseMixin):
    TYPE = "processes"
    Pool = staticmethod(distpool_pool)


class TestCPythonPoolOnDistpool(cpython._TestPool, DistpoolMixin, unittest.TestCase):
    @unittest.skip("inspects multiprocessing.Pool._pool, a private attribute; the "
                   "ValueError part is in test_pool_contract.py")
    def test_make_pool(self) -> None:
        pass
