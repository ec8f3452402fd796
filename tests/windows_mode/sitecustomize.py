"""The simulated-Windows mode of the integration tests: put this directory first on a
process's ``PYTHONPATH`` (``tests/support.py`` does, for every worker, when
``DISTPOOL_TEST_WINDOWS_MODE=1``) and that process behaves, where distpool can tell, as it
would on Windows:

* multiprocessing starts processes with ``spawn``, fresh interpreters given their target
  and arguments pickled (Windows has no fork);
* a process's ``terminate()`` kills it at once, as Windows' TerminateProcess does: no
  SIGTERM, no handler, no warm shutdown. (``signal.SIGKILL`` itself stays: multiprocessing's
  own ``kill()`` needs it on Linux.);
* Celery's worker runs its blocking loop (``synloop``), as it does on Windows, where it has
  no event loop (kombu's hub needs epoll or kqueue);
* distpool's platform switch (:data:`distpool.platform.windows`) is on, so its Windows
  decisions are taken: refusals, sliced waits.

System calls stay Linux's: what the mode proves is that distpool's Windows decisions, and
its code written without POSIX signals between processes, work.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import multiprocessing
import sys
from multiprocessing import popen_fork
from types import ModuleType
from typing import Any, Callable

multiprocessing.set_start_method("spawn", force=True)
popen_fork.Popen.terminate = popen_fork.Popen.kill  # type: ignore[method-assign]


def _blocking_loop(module: ModuleType) -> None:
    module.WorkController.should_use_eventloop = lambda self: False


def _windows_decisions(module: ModuleType) -> None:
    module.windows = True


#: Modules patched once imported (not imported here: most processes need neither).
_AFTER_IMPORT: dict[str, Callable[[ModuleType], None]] = {
    "celery.worker.worker": _blocking_loop,
    "distpool.platform": _windows_decisions,
}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        patch = _AFTER_IMPORT.get(name)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _PatchAfterImport())
