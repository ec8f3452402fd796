"""Property: what pickle sends, distpool sends: pandas tables (empty ones, of mixed dtypes,
categorical), alone and nested with arrays, as arguments, results and globals of ``__main__``
functions. pandas builds an empty table from empty arrays, whose buffers failed dill's pickle
on Python 3.12 and earlier: issue 26."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.wire.round_trips import assert_round_trips

numpy = pytest.importorskip("numpy")
pandas = pytest.importorskip("pandas")
from tests.unit.wire.test_round_trip_arrays import arrays, nested  # noqa: E402  (needs numpy)

PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: For each kind of column, a strategy of its values and the dtype to build it with.
COLUMNS: dict[str, tuple[st.SearchStrategy[Any], str | None]] = {
    "int64": (st.integers(-2**63, 2**63 - 1), "int64"),
    "float64": (st.floats(), "float64"),
    "bool": (st.booleans(), "bool"),
    "text": (st.text(max_size=4), None),  # object, or pandas 3's str
    "mixed objects": (st.none() | st.integers() | st.text(max_size=2), "object"),
    "category": (st.sampled_from(["low", "mid", "high"]), "category"),
    "nullable Int64": (st.none() | st.integers(-1000, 1000), "Int64"),
    "datetime64[ns]": (st.datetimes(datetime(1700, 1, 1), datetime(2200, 1, 1)), "datetime64[ns]"),
}


@st.composite
def frames(draw: st.DrawFn) -> Any:
    """A DataFrame of 0 to 4 rows whose columns are of any of :data:`COLUMNS`' kinds."""
    rows = draw(st.integers(0, 4))
    kinds = draw(st.lists(st.sampled_from(sorted(COLUMNS)), max_size=4))
    columns = {}
    for number, kind in enumerate(kinds):
        values, dtype = COLUMNS[kind]
        columns[f"{kind} {number}"] = pandas.Series(
            draw(st.lists(values, min_size=rows, max_size=rows)), dtype=dtype)
    frame = pandas.DataFrame(columns, index=pandas.RangeIndex(rows))
    if draw(st.booleans()) and rows:  # an index of labels, and a categorical one
        frame.index = pandas.CategoricalIndex([f"r{row % 2}" for row in range(rows)])
    return frame


@st.composite
def empty_tables(draw: st.DrawFn) -> Any:
    """Empty tables as programs make them: from empty arrays, or typed columns and no rows."""
    count = draw(st.integers(1, 3))
    if draw(st.booleans()):
        return pandas.DataFrame({f"c{n}": numpy.zeros(0) for n in range(count)})
    dtypes = draw(st.lists(st.sampled_from(["int64", "float64", "category", "object"]),
                           min_size=count, max_size=count))
    return pandas.DataFrame({f"c{n}": pandas.Series([], dtype=dtype)
                             for n, dtype in enumerate(dtypes)})


tables = frames() | empty_tables() | frames().map(lambda frame: frame.iloc[:, 0] if
                                                  frame.shape[1] else frame)


@PROPERTY
@given(st.recursive(tables | arrays(), nested, max_leaves=6))
def test_tables_travel_every_route_as_pickle_copies_them(value: Any) -> None:
    assert_round_trips(value)


def test_a_model_of_tables_with_an_empty_one_travels_every_route() -> None:
    model = {"fits": pandas.DataFrame({"a": numpy.arange(3.0), "b": list("xyz")}),
             "rejected": pandas.DataFrame({"a": numpy.zeros(0), "b": numpy.zeros(0)}),
             "levels": pandas.Categorical(["low", "high", "low"])}
    assert_round_trips(model)
