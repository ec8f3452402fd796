"""distpool.worker.execute: what a worker process does with one task envelope."""

from __future__ import annotations

import itertools
import sys

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from distpool.errors import MaybeEncodingError, RemoteTraceback
from distpool.wire import serialization
from distpool.wire.envelope import TaskEnvelope
from distpool.worker import execute as worker

_ids = itertools.count()
_calls = {"init": 0}


def square(x):
    return x * x


def power(x, y):
    return x ** y


def count_init(tag):
    _calls["init"] += 1
    _calls["tag"] = tag


def read_tag(_):
    return _calls.get("tag")


def make_generator():
    return (i for i in range(2))


def fail_init():
    raise RuntimeError("simulator licence unavailable")


def envelope(function, arguments, kind="apply", pool_id=None, initializer=None,
             max_tasks=None):
    pool_id = pool_id or f"pool{next(_ids)}"
    return TaskEnvelope(
        pool_id=pool_id, task_id=f"{pool_id}:0:{next(_ids)}", kind=kind,
        function=serialization.dumps(function), arguments=serialization.dumps(arguments),
        initializer=None if initializer is None else serialization.dumps(initializer),
        max_tasks=max_tasks)


def outcome(record):
    return record.ok, serialization.loads(record.payload)


def test_apply_map_and_starmap():
    assert outcome(worker.execute(envelope(power, ((2,), {"y": 5})))) == (True, 32)
    assert outcome(worker.execute(envelope(square, (1, 2, 3), kind="map"))) == (True, [1, 4, 9])
    assert outcome(worker.execute(envelope(power, ((2, 3), (3, 2)), kind="starmap"))) == (
        True, [8, 9])


def test_exception_comes_back_with_its_traceback_text():
    ok, (exc, remote) = outcome(worker.execute(envelope(square, (("x",), {}))))
    assert not ok and isinstance(exc, TypeError)
    assert "in square" in remote and "return x * x" in remote
    assert "in square" in str(RemoteTraceback(remote))


def test_initializer_runs_once_per_pool_and_process():
    _calls["init"] = 0
    init = (count_init, ("case-A",))
    for _ in range(3):
        ok, value = outcome(worker.execute(
            envelope(read_tag, ((0,), {}), pool_id="initpool", initializer=init)))
        assert ok and value == "case-A"
    assert _calls["init"] == 1


@pytest.fixture(autouse=True)
def _process_not_spent(monkeypatch):
    """Each test starts as a process that no pool's maxtasksperchild has run out in."""
    monkeypatch.setattr(worker, "_spent", False)


def test_the_process_is_spent_once_it_has_begun_max_tasks_of_a_pool_failed_ones_included():
    worker.execute(envelope(square, ((2,), {}), pool_id="spending", max_tasks=3))
    worker.execute(envelope(square, (("x",), {}), pool_id="spending", max_tasks=3))  # fails
    worker.execute(envelope(square, ((2,), {}), pool_id="unlimited"))
    assert not worker.spent()
    worker.execute(envelope(square, ((2,), {}), pool_id="spending", max_tasks=3))
    assert worker.spent()


def test_a_chunk_is_one_task():
    worker.execute(envelope(square, (1, 2, 3), kind="map", pool_id="chunks", max_tasks=2))
    assert not worker.spent()


def test_max_tasks_starts_the_pool_state_afresh():
    _calls["init"] = 0
    init = (count_init, ("case-B",))
    for _ in range(5):
        assert outcome(worker.execute(envelope(
            square, ((2,), {}), pool_id="maxpool", initializer=init, max_tasks=2)))[0]
    assert _calls["init"] == 3  # tasks 1-2, 3-4, 5


def test_failing_initializer_fails_the_task_and_is_retried():
    init = (fail_init, ())
    for _ in range(2):
        ok, (exc, remote) = outcome(worker.execute(
            envelope(square, ((2,), {}), pool_id="badinit", initializer=init)))
        assert not ok and "simulator licence unavailable" in str(exc)
        assert "in fail_init" in remote


def test_unpicklable_result_becomes_maybe_encoding_error():
    ok, (exc, _) = outcome(worker.execute(envelope(make_generator, ((), {}))))
    assert not ok and isinstance(exc, MaybeEncodingError)
    assert "generator" in str(exc)


def test_namespaces_are_bounded(monkeypatch):
    monkeypatch.setattr(worker, "MAX_NAMESPACES", 2)
    for _ in range(4):
        worker.execute(envelope(square, ((1,), {})))
    assert len(worker._pools) <= 2


def exit_with(code):
    sys.exit(code)


def interrupt():
    raise KeyboardInterrupt("pressed in the task")


class ExitsWhenPickled:
    def __reduce__(self):
        sys.exit("cannot travel")


def return_unpicklable():
    return ExitsWhenPickled()


def test_sys_exit_and_keyboard_interrupt_are_the_task_s_failure_as_in_process_pool_executor():
    ok, (exc, remote) = outcome(worker.execute(envelope(exit_with, ((3,), {}))))
    assert not ok and isinstance(exc, SystemExit) and exc.code == 3
    assert "in exit_with" in remote
    ok, (exc, _) = outcome(worker.execute(envelope(interrupt, ((), {}))))
    assert not ok and isinstance(exc, KeyboardInterrupt)
    ok, (exc, _) = outcome(worker.execute(envelope(exit_with, (1, 2), kind="map")))
    assert not ok and isinstance(exc, SystemExit) and exc.code == 1


def test_a_result_whose_pickling_exits_becomes_maybe_encoding_error():
    ok, (exc, _) = outcome(worker.execute(envelope(return_unpicklable, ((), {}))))
    assert not ok and isinstance(exc, MaybeEncodingError) and "cannot travel" in str(exc)


def test_the_soft_time_limit_still_fails_the_task():
    ok, (exc, _) = outcome(worker.execute(envelope(raise_soft_limit, ((), {}))))
    assert not ok and isinstance(exc, SoftTimeLimitExceeded)


def raise_soft_limit():
    raise SoftTimeLimitExceeded()


def test_the_exit_of_a_prefork_process_being_terminated_is_not_the_task_s(monkeypatch):
    # billiard's SIGTERM handler in a prefork pool process sets this flag, then raises
    # SystemExit in the running task (hard time limit, cold shutdown): the process must end.
    import billiard.common

    monkeypatch.setattr(billiard.common, "terminate_handler_fired", lambda: True,
                        raising=False)
    monkeypatch.setattr(billiard.common, "_should_have_exited", [True])
    with pytest.raises(SystemExit):
        worker.execute(envelope(exit_with, ((-15,), {})))
    with pytest.raises(KeyboardInterrupt):  # whatever the job's cleanup raised meanwhile
        worker.execute(envelope(interrupt, ((), {})))
