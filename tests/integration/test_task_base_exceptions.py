"""A task that raises SystemExit or KeyboardInterrupt: a user error, like any other.

As ``concurrent.futures.ProcessPoolExecutor`` does (its worker catches ``BaseException``), the
caller gets the exception promptly, and the worker process serves on. ``multiprocessing.Pool``
loses the task instead: its worker catches ``Exception``, so the process ends and the caller
waits for ever.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

import distpool
from distpool.errors import RemoteTraceback
from tests.integration.test_reliability import PROCESS_MODELS, with_each_process_model

pytestmark = pytest.mark.integration

#: Far longer than a task takes, far shorter than the caller would wait without the fix.
PROMPTLY = 15.0


def exit_with(code):
    sys.exit(code)


def interrupt():
    raise KeyboardInterrupt("pressed in the task")


def exit_in_a_map(x):
    if x == 2:
        sys.exit("bad item")
    return x


@with_each_process_model
def test_sys_exit_and_keyboard_interrupt_fail_their_task_and_the_slot_serves_on(
        make_cluster, model):
    cluster = make_cluster(nodes=1, concurrency=1, extra_args=PROCESS_MODELS[model])
    with distpool.Pool(1, **cluster.pool_kwargs()) as pool:
        pid = pool.apply(os.getpid)
        started = time.monotonic()

        with pytest.raises(SystemExit) as exited:
            pool.apply_async(exit_with, (3,)).get(timeout=PROMPTLY)
        assert exited.value.code == 3
        assert isinstance(exited.value.__cause__, RemoteTraceback)
        assert "in exit_with" in str(exited.value.__cause__)

        with pytest.raises(KeyboardInterrupt, match="pressed in the task"):
            pool.apply_async(interrupt).get(timeout=PROMPTLY)

        with pytest.raises(SystemExit, match="bad item"):
            pool.map_async(exit_in_a_map, range(4), chunksize=1).get(timeout=PROMPTLY)

        assert time.monotonic() - started < PROMPTLY
        # The same process, not a replacement: nothing was lost or restarted.
        assert pool.apply_async(os.getpid).get(timeout=PROMPTLY) == pid
