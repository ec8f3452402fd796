"""A script whose globals hold empty NumPy arrays and pandas tables (issue 26): what
multiprocessing runs, distpool runs. Its functions and classes travel by value through dill,
whose pure-Python pickler failed on two empty arrays on Python 3.12 and earlier."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pytest

from tests.compat import conftest as compat
from tests.support import REPO_ROOT, environment_without_distpool

pandas = pytest.importorskip("pandas")

#: README's scenario, and a model of tables with an empty one, as a user's script has them.
SCRIPT = """
import sys

import numpy as np
import pandas as pd

EMPTY = [np.zeros(0), np.zeros(0)]
MODEL = {"fits": pd.DataFrame({"a": np.arange(3.0), "b": list("xyz")}),
         "rejected": pd.DataFrame({"a": np.zeros(0), "b": np.zeros(0)}),
         "levels": pd.DataFrame({"level": pd.Categorical([], categories=["low", "high"])})}


class Case:
    def __init__(self, tables):
        self.tables = tables


def rows(x):
    return len(EMPTY) + len(MODEL["rejected"]) + len(MODEL["fits"]) + x


def echo(case):
    return case
"""

MAIN = """
if __name__ == "__main__":
    if sys.argv[1] == "multiprocessing":
        from multiprocessing import get_context
        Pool = get_context("spawn").Pool  # sends the arguments as distpool must
    else:
        from distpool import Pool
    with Pool(2) as pool:
        print(pool.map(rows, range(4)))
        cases = pool.map(echo, [Case([np.zeros(0), MODEL["rejected"]])] * 2)
        print([(type(case).__name__, [len(table) for table in case.tables]) for case in cases])
"""


@pytest.fixture
def script_main() -> Iterator[Any]:
    """:data:`SCRIPT` run in this process's ``__main__``, as a user's script: a forked
    multiprocessing pool inherits it, distpool sends its functions by value."""
    main = sys.modules["__main__"]
    before = set(vars(main))
    exec(compile(SCRIPT, "<script>", "exec"), main.__dict__)
    yield main
    for name in set(vars(main)) - before:
        delattr(main, name)


def test_a_function_whose_globals_hold_empty_arrays_and_tables(make_pool: Any,
                                                               script_main: Any) -> None:
    pool = make_pool(2)
    assert pool.map(script_main.rows, range(4)) == [5, 6, 7, 8]
    assert pool.apply(script_main.rows, (1,)) == 6


def test_instances_of_a_main_class_holding_empty_tables_go_and_come_back(
        make_pool: Any, script_main: Any) -> None:
    tables = [numpy.zeros(0), numpy.zeros((0, 2), order="F"), numpy.zeros(()),
              script_main.MODEL["rejected"], script_main.MODEL["levels"]]
    cases = make_pool(2).map(script_main.echo, [script_main.Case(tables)] * 3, chunksize=1)
    for case in cases:
        assert type(case) is script_main.Case
        for sent, received in zip(tables, case.tables):
            if isinstance(sent, pandas.DataFrame):
                pandas.testing.assert_frame_equal(received, sent)
            else:
                numpy.testing.assert_array_equal(received, sent)
                assert received.shape == sent.shape


def test_the_script_prints_the_same_on_spawned_multiprocessing_and_distpool(
        tmp_path: Path) -> None:
    assert compat.cluster is not None
    script = tmp_path / "empty_tables.py"
    script.write_text(SCRIPT + MAIN)
    outputs = []
    for kind, settings in (("multiprocessing", {}), ("distpool", compat.cluster.environment())):
        # The client imports the distpool under test, as the workers do.
        environment = environment_without_distpool(PYTHONPATH=str(REPO_ROOT), **settings)
        completed = subprocess.run([sys.executable, str(script), kind], cwd=tmp_path,
                                   env=environment, capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, f"{kind}: {completed.stderr}"
        outputs.append(completed.stdout)
    assert outputs[0] == outputs[1]
    assert outputs[0].splitlines() == ["[5, 6, 7, 8]", "[('Case', [0, 0]), ('Case', [0, 0])]"]
