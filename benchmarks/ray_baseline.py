"""Ray's ``multiprocessing.Pool`` replacement, as a comparison column when Ray is installed.

``ray.util.multiprocessing.Pool`` has the standard library's API, so the workloads run on it
unchanged. Pools "attached" to running workers use a Ray runtime started beforehand
(``ray.init``, around each measurement: its background processes take a good share of a
2-core machine); a "fresh" pool starts Ray itself, as a user's first ``Pool()`` does.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def available() -> bool:
    return importlib.util.find_spec("ray") is not None


@contextmanager
def running_runtime(processes: int) -> Iterator[None]:
    """Ray's runtime, up for the pools attached to it, and shut down at the end."""
    import ray

    ray.init(num_cpus=processes, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def attached_pool(processes: int) -> Any:
    from ray.util.multiprocessing import Pool

    return Pool(processes)


@contextmanager
def fresh_pool(processes: int) -> Iterator[Any]:
    """A pool that starts Ray's runtime itself."""
    import ray
    from ray.util.multiprocessing import Pool

    ray.shutdown()  # the session's runtime: this pool must start its own
    try:
        with Pool(processes) as pool:
            yield pool
    finally:
        ray.shutdown()
