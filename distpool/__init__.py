"""distpool: run ``multiprocessing.Pool`` code on a cluster by changing one import.

    from distpool import Pool   # was: from multiprocessing import Pool
"""

from __future__ import annotations

import logging

from ._version import __version__
from .client.executor import Executor
from .client.pool import DistributedPool, Pool
from .client.results import ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult
from .errors import (
    BrokerUnavailableError,
    DistpoolError,
    EnvelopeError,
    IncompatibleEnvelopeError,
    MaybeEncodingError,
    PayloadTooLargeError,
    PoolTerminatedError,
    RemoteTraceback,
    TaskTimeoutError,
    TimeoutError,
    WorkerLostError,
)
from .local.cluster import LocalCluster, LocalClusterError

# Silent unless the application configures logging: a library does not print on its own.
logging.getLogger("distpool").addHandler(logging.NullHandler())

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "BrokerUnavailableError",
    "DistpoolError",
    "DistributedPool",
    "EnvelopeError",
    "Executor",
    "IMapIterator",
    "IMapUnorderedIterator",
    "IncompatibleEnvelopeError",
    "LocalCluster",
    "LocalClusterError",
    "MapResult",
    "MaybeEncodingError",
    "PayloadTooLargeError",
    "Pool",
    "PoolTerminatedError",
    "RemoteTraceback",
    "TaskTimeoutError",
    "TimeoutError",
    "WorkerLostError",
    "__version__",
]
