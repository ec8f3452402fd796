"""Digests of arguments: equal for equal values in any process, different for values a
function could tell apart."""

from __future__ import annotations

import collections
import dataclasses
import enum
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import distpool
from distpool.client.digest import MAX_DEPTH, digest

Point = collections.namedtuple("Point", "x y")


class Tagged(list):
    pass


class Slotted(list):
    __slots__ = ("label",)

    def __init__(self, items, label):
        super().__init__(items)
        self.label = label


@dataclasses.dataclass
class Holder:
    held: object


class Colour(enum.Enum):
    RED = 1


def nested(depth, leaf=0):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def tagged(items, **attributes):
    value = Tagged(items)
    value.__dict__.update(attributes)
    return value


SHARED = [1]

DIFFERENT = [
    None, True, False, 0, 1, -1, 1.0, 0.0, -0.0, 1j, "1", "", b"1", b"", bytearray(b"1"),
    memoryview(b"1"), memoryview(bytearray(b"1")), memoryview(b"\1\0\0\0").cast("i"),
    (1,), [1], (), [], {1}, frozenset({1}), set(), frozenset(), {1: None}, {}, ((1,),),
    [[1]], 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**200, -2**200, "\ud800", "\udc00",
    ("ab",), ("a", "b"), [b"a", b"b"], [b"ab"], {"a": "b"}, {"ab": ""}, {"a": 1, "b": 2},
    {"a": 1, "b": 3}, Point(1, 2), (1, 2), [1, 2],
    collections.OrderedDict(a=1, b=2), collections.OrderedDict(b=2, a=1),
    collections.Counter(a=1), {"a": 1}, collections.defaultdict(int, a=1),
    collections.defaultdict(list, a=1), Tagged([1]), tagged([1], label="x"),
    tagged([1], label="y"), Slotted([1], "x"), Slotted([1], "y"), Holder(1), Holder(1.0),
    Holder([1]),
    Colour.RED, [SHARED, SHARED], [SHARED, [1]], nested(MAX_DEPTH), nested(MAX_DEPTH + 1),
    nested(MAX_DEPTH + 5), nested(MAX_DEPTH + 5, 1),
]


def test_values_a_function_could_tell_apart_have_different_digests():
    digests = [digest(value) for value in DIFFERENT]
    assert all(len(d) == 32 for d in digests)
    clashes = [(DIFFERENT[i], DIFFERENT[j]) for i in range(len(digests))
               for j in range(i) if digests[i] == digests[j]]
    assert not clashes


@pytest.mark.parametrize("make", [
    lambda: {"a": 1, "b": [2, {3}]},
    lambda: {frozenset({"x", "y"}): ("z", 1.5, None), "k": b"v"},
    lambda: collections.OrderedDict(a=1, b=2),
    lambda: Point(1, [2]),
    lambda: float("nan"),
    lambda: 10**40,
    lambda: Holder({"a": [1, 2]}),
    lambda: [Colour.RED, Colour.RED, Holder(1)],
    lambda: nested(MAX_DEPTH + 50),
    lambda: [bytes(200_000), list(range(50_000))],  # past the chunk size: hashed directly
], ids=["dict", "frozenset-key", "ordered", "namedtuple", "nan", "bigint", "object",
        "shared-enum", "deep", "large"])
def test_equal_values_built_apart_have_equal_digests(make):
    assert digest(make()) == digest(make())


def test_plain_dict_and_set_order_does_not_matter_but_an_ordered_dicts_does():
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})
    assert digest({10, 2, 300}) == digest({300, 10, 2})
    words = [f"w{i}" for i in range(50)]
    assert digest(set(words)) == digest(set(reversed(words)))
    assert digest(frozenset(words)) == digest(frozenset(reversed(words)))
    moved = collections.OrderedDict(a=1, b=2)
    moved.move_to_end("a")
    assert digest(moved) == digest(collections.OrderedDict(b=2, a=1))
    assert digest(moved) != digest(collections.OrderedDict(a=1, b=2))


def test_large_values_differ_in_their_last_byte():
    data = bytearray(300_000)
    before = digest(bytes(data))
    data[-1] = 1
    assert digest(bytes(data)) != before
    assert digest(list(range(100_000))) != digest(list(range(99_999)) + [0])


def test_an_object_in_two_places_is_not_two_equal_objects():
    # [x, x] and [x, copy(x)] differ to a function that changes x, and pickle keeps that.
    inner = [1]
    assert digest([inner, inner]) == digest([[1]] * 2)
    assert digest([inner, inner]) != digest([inner, [1]])
    assert digest([Holder(inner), inner]) != digest([Holder(inner), [1]])
    assert digest({"a": inner, "b": inner}) != digest({"a": inner, "b": [1]})


def test_cycles_are_digested():
    loop, again, mapping = [], [], {}
    loop.append(loop)
    again.append(again)
    mapping["self"] = mapping
    assert digest(loop) == digest(again) != digest([[]])
    assert digest(Holder(loop)) == digest(Holder(again))
    assert len(digest(mapping)) == 32


def test_nesting_too_deep_even_for_pickle_raises_type_error():
    with pytest.raises(TypeError, match="list"):
        digest(nested(100_000))


@pytest.mark.parametrize("value, name", [
    (threading.Lock(), "_thread.lock"), ([1, (threading.Lock(),)], "_thread.lock"),
    ({"a": lambda: 0}, "builtins.function")])
def test_an_unpicklable_value_raises_type_error_naming_its_type(value, name):
    with pytest.raises(TypeError, match=f"cannot digest a {name}"):
        digest(value)


SEEDED_VALUE = """(
    {"b": frozenset({"x", "y", "z"}), "a": {("k", 1), ("j", 2)}, "c": {"q": "r", "p": "s"}},
    ["s" * 3, (1, (2, (3, "deep")))],
    {frozenset({"p", "q"}): {"r", "s", "t"}, "words": {"w%d" % i for i in range(40)}},
    [Point(frozenset({"u", "v"}), {"n": {"m"}})],
)"""


def test_digests_are_equal_in_processes_with_different_hash_seeds():
    code = ("import collections, sys\n"
            "from distpool.client.digest import digest\n"
            "Point = collections.namedtuple('Point', 'x y', module='__main__')\n"
            f"value = {SEEDED_VALUE}\n"
            "print(digest(value).hex(), 'numpy' in sys.modules)\n"
            "print(' '.join({'w%d' % i for i in range(40)}))\n")
    root = str(Path(distpool.__file__).resolve().parents[1])
    outputs = []
    for seed in ("1", "2"):
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=path)
        completed = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                   text=True, timeout=60, env=env, check=True)
        outputs.append(completed.stdout.splitlines())
    (first, first_order), (second, second_order) = outputs
    assert first_order != second_order  # the seeds do change set order
    point = collections.namedtuple("Point", "x y", module="__main__")  # the same class name
    here = digest(eval(SEEDED_VALUE, {"Point": point}))
    assert first == second == f"{here.hex()} False"  # and digest never imports NumPy


@pytest.fixture
def np():
    return pytest.importorskip("numpy")


class TestNumpy:
    def test_layout_and_writability_do_not_matter(self, np):
        grid = np.arange(24, dtype=np.float64).reshape(4, 6)
        assert digest(grid[:, ::2]) == digest(grid[:, ::2].copy())
        assert digest(np.asfortranarray(grid)) == digest(grid)
        frozen = grid.copy()
        frozen.flags.writeable = False
        assert digest(frozen) == digest(grid)
        assert digest(grid.T) == digest(np.ascontiguousarray(grid.T)) != digest(grid)

    def test_dtype_shape_and_contents_matter(self, np):
        values = [np.zeros(0), np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.array(5),
                  np.array([5]), np.int64(5), np.int32(5), np.float64(5), 5.0, 5,
                  np.arange(6), np.arange(6).reshape(2, 3), np.arange(6).astype(">i8"),
                  np.arange(6).astype(np.int32), np.array([0.0]), np.array([-0.0]),
                  np.array(["ab"]), np.array([b"ab"]), np.array([1, 2], dtype=object),
                  np.array([1, "2"], dtype=object)]
        digests = {digest(value) for value in values}
        assert len(digests) == len(values)
        assert digest(np.zeros((0, 3))) == digest(np.ones((0, 3)))
        assert digest(np.array(5)) == digest(np.array([5])[0, ...])

    def test_object_arrays_go_element_by_element(self, np):
        made = [np.array([{"b", "a"}, (1, "x"), None], dtype=object) for _ in range(2)]
        assert digest(made[0]) == digest(made[1])
        made[1][1] = (1, "y")
        assert digest(made[0]) != digest(made[1])
        fortran = np.asfortranarray(np.array([[1, "a"], [2, "b"]], dtype=object))
        assert digest(fortran) == digest(np.array([[1, "a"], [2, "b"]], dtype=object))

    def test_structured_arrays_go_by_their_fields(self, np):
        rows = [(1, 2.5), (3, 4.5)]
        xy = np.array(rows, dtype=[("x", "<i4"), ("y", "<f8")])
        assert digest(xy) == digest(np.array(rows, dtype=[("x", "<i4"), ("y", "<f8")]))
        assert digest(xy) != digest(np.array(rows, dtype=[("a", "<i4"), ("y", "<f8")]))
        assert digest(xy[0]) != digest(xy[1])
        assert digest(xy[::-1]) == digest(xy[::-1].copy())

    def test_an_array_in_two_places_is_not_two_equal_arrays(self, np):
        array = np.arange(3)
        assert digest([array, array]) != digest([array, array.copy()])
