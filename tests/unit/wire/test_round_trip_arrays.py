"""Property: what pickle sends, distpool sends: nested containers of NumPy arrays of every
layout (empty, 0-d, non-contiguous, Fortran-ordered, read-only, object dtype, large enough to
travel out of band), as arguments, results and globals of ``__main__`` functions.

Pure-Python pickle (dill's) memoized the in-band bytes of each empty buffer, the one ``b""``
object, so two empty arrays failed on Python 3.12 and earlier: issue 26.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distpool.wire.payload import MIN_OUT_OF_BAND
from tests.unit.wire.round_trips import assert_round_trips

numpy = pytest.importorskip("numpy")
hnp = pytest.importorskip("hypothesis.extra.numpy")

DTYPES = ["bool", "int8", "uint16", "int64", "float32", "float64", "complex128", "U3", "S2",
          "datetime64[ns]", "timedelta64[s]"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
LAYOUTS = ["as made", "Fortran", "strided", "transposed", "reversed", "out of band"]

PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def laid_out(array: Any, layout: str, read_only: bool) -> Any:
    """``array`` in the given layout (a view where one suffices), read-only if asked."""
    if layout == "Fortran":
        while array.ndim < 2:  # a 1-d array is as much Fortran-ordered as C-ordered
            array = numpy.stack([array, array], axis=-1)
        array = numpy.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        array = array[..., ::2]
    elif layout == "transposed":
        array = array.T
    elif layout == "reversed" and array.ndim:
        array = array[::-1]
    elif layout == "out of band" and array.size:
        # Large enough that its buffer travels beside the pickle stream.
        array = numpy.tile(array, -(-MIN_OUT_OF_BAND // array.nbytes or 1) + 1)
    if read_only:
        array = array.view()
        array.flags.writeable = False
    return array


@st.composite
def arrays(draw: st.DrawFn) -> Any:
    """A NumPy array of a plain dtype, in any layout."""
    array = draw(hnp.arrays(st.sampled_from(DTYPES).map(numpy.dtype), SHAPES))
    return laid_out(array, draw(st.sampled_from(LAYOUTS)), draw(st.booleans()))


@st.composite
def object_arrays(draw: st.DrawFn) -> Any:
    """An array of dtype object: Python values and arrays, empty ones among them."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    items = st.none() | st.integers() | st.text(max_size=3) | st.just(b"") | \
        st.builds(numpy.zeros, st.integers(0, 2)) | arrays()
    array = numpy.empty(shape, dtype=object)
    for index in numpy.ndindex(shape):
        array[index] = draw(items)  # one by one: an array item is not spread over the array
    return laid_out(array, draw(st.sampled_from(LAYOUTS[:-1])), draw(st.booleans()))


scalars = st.sampled_from(DTYPES).flatmap(lambda dtype: hnp.from_dtype(numpy.dtype(dtype)).map(
    lambda value: numpy.array(value, dtype=dtype)[()]))
leaves = arrays() | object_arrays() | scalars | st.just(b"") | st.binary(max_size=3).map(
    bytearray) | st.none() | st.integers() | st.text(max_size=3)


def nested(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists, tuples and dicts of ``children``, and lists holding one of them twice."""
    return st.lists(children, max_size=3) | st.tuples(children, children) | \
        st.dictionaries(st.text(max_size=3), children, max_size=3) | \
        st.lists(children, min_size=1, max_size=3).map(lambda items: [*items, items[0]])


@PROPERTY
@given(st.recursive(leaves, nested, max_leaves=8))
def test_nested_arrays_travel_every_route_as_pickle_copies_them(value: Any) -> None:
    assert_round_trips(value)


@pytest.mark.parametrize("value", [
    [numpy.zeros(0), numpy.zeros(0)],  # issue 26's EMPTY: the AssertionError
    [numpy.zeros(0), b""],  # b"" came back as the array's bytearray
    [numpy.zeros((0, 3), order="F"), numpy.zeros(()), numpy.zeros(0, dtype=object)],
], ids=["two empty arrays", "an empty array then b''", "empty, 0-d and object"])
def test_empty_arrays_travel_every_route(value: Any) -> None:
    assert_round_trips(value)
