"""Payloads, without any service.

Functions "of __main__" are made by executing source in a stand-in module installed as
``sys.modules['__main__']``, which is what the client-side serialiser consults.
"""

from __future__ import annotations

import pickle
import sys
import textwrap
import types

import numpy
import pytest

from distpool.errors import EnvelopeError
from distpool.wire import serialization
from distpool.wire.payload import Payload

SCRIPT = textwrap.dedent("""
    import math
    SCALE = 10
    case = None

    def helper(x):
        return x * SCALE

    def initializer(name):
        global case
        case = name

    def task(x):
        return helper(x) + math.floor(0.5), case

    class Job:
        def __init__(self, n):
            self.n = n
        def execute(self):
            return Outcome(helper(self.n))

    class Outcome:
        def __init__(self, value):
            self.value = value

    def run(job):
        return job.execute()

    square = lambda x: x * x
""")


@pytest.fixture
def script_main(monkeypatch):
    """A module standing in for the user's script, installed as ``__main__``."""
    main = types.ModuleType("__main__")
    exec(compile(SCRIPT, "<script>", "exec"), main.__dict__)
    monkeypatch.setitem(sys.modules, "__main__", main)
    return main


def test_plain_data_uses_c_pickle():
    data = serialization.dumps([1, "two", {3: 4.0}])
    assert data.to_bytes()[:1] == b"P"
    assert serialization.loads(data) == [1, "two", {3: 4.0}]


def test_importable_function_travels_by_reference():
    data = serialization.dumps(textwrap.dedent)
    assert data.to_bytes()[:1] == b"P"
    assert serialization.loads(data) is textwrap.dedent


def test_main_function_travels_by_value_with_the_globals_it_uses(script_main):
    payload = serialization.dumps(script_main.task)
    assert payload.to_bytes()[:1] == b"D"
    namespace = serialization.new_namespace()
    task = serialization.loads(payload, namespace=namespace)
    assert task is not script_main.task
    assert task(2) == (20, None)
    assert task.__globals__ is namespace.__dict__
    assert {"helper", "SCALE", "math", "case", "task"} <= set(vars(namespace))


def test_a_payload_names_the_modules_it_refers_to_by_name(script_main):
    found: set[str] = set()
    serialization.dumps([textwrap.dedent, numpy.zeros(3)], modules=found)
    assert {"textwrap", "numpy"} <= {name.partition(".")[0] for name in found}
    found.clear()
    serialization.dumps(script_main.task, modules=found)  # by value: its globals' modules
    assert "math" in found and "__main__" not in found
    found.clear()
    serialization.dumps([1, "two", {3: 4.0}], modules=found)
    assert found == set()


def test_initializer_globals_are_seen_by_later_tasks(script_main):
    namespace = serialization.new_namespace()
    initializer = serialization.loads(serialization.dumps(script_main.initializer),
                                      namespace=namespace)
    initializer("grid.sav")
    task = serialization.loads(serialization.dumps(script_main.task), namespace=namespace)
    # The client's own `case = None` does not overwrite what the initializer set.
    assert task(1) == (10, "grid.sav")


def test_main_classes_go_by_value_and_come_back_as_the_clients_class(script_main):
    namespace = serialization.new_namespace()
    jobs = serialization.loads(serialization.dumps([script_main.Job(1), script_main.Job(2)]),
                               namespace=namespace)
    run = serialization.loads(serialization.dumps(script_main.run), namespace=namespace)
    outcomes = [run(job) for job in jobs]
    assert type(outcomes[0]) is not script_main.Outcome  # the worker's copy
    returned = serialization.loads(serialization.dumps(outcomes, namespace=namespace))
    assert [type(o) for o in returned] == [script_main.Outcome] * 2
    assert [o.value for o in returned] == [10, 20]


def test_lambdas_travel(script_main):
    namespace = serialization.new_namespace()
    square = serialization.loads(serialization.dumps(script_main.square), namespace=namespace)
    assert square(7) == 49


def test_unserialisable_objects_raise_the_picklers_error():
    with pytest.raises(TypeError):
        serialization.dumps(x for x in range(3))


def test_unknown_payload_encoding_is_refused():
    with pytest.raises(EnvelopeError):
        serialization.loads(Payload.pack(b"Z", b"garbage", []))


def test_large_buffers_travel_out_of_band_without_copies_and_load_writable():
    array = numpy.arange(100_000, dtype=numpy.float64)
    payload = serialization.dumps({"array": array, "small": numpy.arange(3)})
    # The array's own memory is a frame of the payload: nothing was copied to send it.
    assert any(numpy.shares_memory(numpy.frombuffer(frame, dtype=numpy.uint8), array)
               for frame in payload.frames)
    for received in (payload, Payload([payload.to_bytes()]),
                     Payload([bytearray(payload.to_bytes())])):
        loaded = serialization.loads(received)
        assert numpy.array_equal(loaded["array"], array)
        assert loaded["array"].flags.writeable  # as under multiprocessing
        loaded["array"][0] = -1
    assert array[0] == 0  # a copy, never the caller's array


def test_a_main_functions_global_array_travels_out_of_band(script_main):
    script_main.TABLE = numpy.ones(50_000)
    exec("def total(x):\n    return TABLE.sum() + x", script_main.__dict__)
    payload = serialization.dumps(script_main.total)
    assert payload.to_bytes()[:1] == b"d"  # dill, with buffers
    assert max(memoryview(frame).nbytes for frame in payload.frames) == \
        script_main.TABLE.nbytes
    namespace = serialization.new_namespace()
    assert serialization.loads(payload, namespace=namespace)(1) == 50_001


@pytest.mark.parametrize("mangle", [
    lambda raw: raw[:5],                       # cut inside the table
    lambda raw: raw[:-1],                      # a buffer cut short
    lambda raw: raw + b"\0",                   # bytes beyond the last buffer
    lambda raw: raw[:1] + b"\xff\xff\xff\x7f" + raw[5:],  # a count past the end
])
def test_a_malformed_payload_table_is_refused_before_unpickling(mangle):
    raw = serialization.dumps([numpy.zeros(1000), "x"]).to_bytes()
    with pytest.raises(EnvelopeError):
        serialization.loads(Payload([mangle(raw)]))


def test_payload_parts_cover_its_bytes_in_order():
    payload = serialization.dumps([numpy.arange(5000), b"x" * 3000, numpy.arange(7000)])
    for size in (1, 1000, 4096, payload.nbytes, 10 * payload.nbytes):
        parts = list(payload.parts(size))
        assert b"".join(bytes(part) for part in parts) == payload.to_bytes()
        assert all(len(part) == size for part in parts[:-1])


def test_in_band_buffers_travel_by_dill_as_c_pickle_copies_them(script_main):
    # Pure-Python pickle before 3.13 memoized each in-band buffer's bytes, and every empty
    # buffer's are the one b"" object: two failed its memo's assertion, and a b"" after a
    # writable one came back as a bytearray (issue 26). C pickle memoizes the buffer itself.
    shared = pickle.PickleBuffer(bytearray(b"ab"))
    value = [pickle.PickleBuffer(b""), pickle.PickleBuffer(bytearray()), b"",
             pickle.PickleBuffer(b""), bytearray(), shared, shared]
    expected = pickle.loads(pickle.dumps(value, serialization.PROTOCOL))
    assert expected == [b"", bytearray(), b"", b"", bytearray(), bytearray(b"ab"),
                        bytearray(b"ab")]
    payload = serialization.dumps((script_main.square, value))
    assert payload.to_bytes()[:1] == b"D"  # dill, for the __main__ lambda
    _, copy = serialization.loads(payload, namespace=serialization.new_namespace())
    assert [(type(item), item) for item in copy] == [(type(item), item) for item in expected]
    assert copy[-1] is copy[-2]


def test_a_bytearray_in_two_places_comes_back_as_one_through_dill(script_main):
    # C pickle memoizes a bytearray; Python 3.9's pure-Python pickle did not.
    shared = bytearray(b"cd")
    payload = serialization.dumps((script_main.square, [shared, shared]))
    _, copy = serialization.loads(payload, namespace=serialization.new_namespace())
    assert copy == [shared, shared] and copy[0] is copy[1]
