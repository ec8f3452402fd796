"""distpool: run ``multiprocessing.Pool`` code on a cluster by changing one import.

    from distpool import Pool   # was: from multiprocessing import Pool
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .client.executor import Executor
    from .client.pool import DistributedPool, Pool
    from .client.results import (
        ApplyResult,
        AsyncResult,
        IMapIterator,
        IMapUnorderedIterator,
        MapResult,
    )
    from .errors import (
        BrokerUnavailableError,
        CheckpointError,
        DistpoolError,
        EnvelopeError,
        IncompatibleEnvelopeError,
        MaybeEncodingError,
        ModuleConflictError,
        PayloadTooLargeError,
        PoolTerminatedError,
        RemoteTraceback,
        TaskTimeoutError,
        TimeoutError,
        UnsupportedRedisError,
        VersionMismatchError,
        VersionSkewWarning,
        WorkerLostError,
    )
    from .local.cluster import LocalCluster, LocalClusterError

#: Where each export lives: ``import distpool`` loads none of them, and the first use of one
#: loads its module (PEP 562). A process that only imports distpool, or a CLI command, then
#: pays for nothing else, and a first pool for what it uses.
_EXPORTS = {
    "Executor": "client.executor",
    "DistributedPool": "client.pool",
    "Pool": "client.pool",
    **dict.fromkeys(["ApplyResult", "AsyncResult", "IMapIterator", "IMapUnorderedIterator",
                     "MapResult"], "client.results"),
    **dict.fromkeys(["BrokerUnavailableError", "CheckpointError", "DistpoolError", "EnvelopeError",
                     "IncompatibleEnvelopeError", "MaybeEncodingError",
                     "ModuleConflictError", "PayloadTooLargeError", "PoolTerminatedError",
                     "RemoteTraceback", "TaskTimeoutError", "TimeoutError",
                     "UnsupportedRedisError", "VersionMismatchError", "VersionSkewWarning",
                     "WorkerLostError"],
                    "errors"),
    "LocalCluster": "local.cluster",
    "LocalClusterError": "local.cluster",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later uses are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


# Silent unless the application configures logging: a library does not print on its own.
logging.getLogger("distpool").addHandler(logging.NullHandler())

__all__ = [
    "ApplyResult",
    "AsyncResult",
    "BrokerUnavailableError",
    "CheckpointError",
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
    "ModuleConflictError",
    "PayloadTooLargeError",
    "Pool",
    "PoolTerminatedError",
    "RemoteTraceback",
    "TaskTimeoutError",
    "TimeoutError",
    "UnsupportedRedisError",
    "VersionMismatchError",
    "VersionSkewWarning",
    "WorkerLostError",
    "__version__",
]
