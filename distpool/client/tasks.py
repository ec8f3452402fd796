"""A task inside the client, and its name on the wire.

Inside the client a task is ``(job, index)``: the pool's ``job``-th call, and the ``index``-th
chunk of it (0 for ``apply``). The envelope that carries it is named ``<pool>:<job>:<index>``
(workers read the pool id from that prefix of the message id), and :class:`TaskMaker` is the
one place that name is made. Nothing in the client parses it back: the engine keeps the
:class:`Task` it sent under that name, which is what result records come back with.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..wire.envelope import TaskEnvelope
from .shipping import Serialised

T = TypeVar("T")


class Task:
    """Chunk ``index`` of job ``job``, and the envelope that carries it to the workers (once
    staged, without its large payloads: see ``Backend.stage``)."""

    __slots__ = ("job", "index", "envelope")

    def __init__(self, job: int, index: int, envelope: TaskEnvelope) -> None:
        self.job = job
        self.index = index
        self.envelope = envelope

    def __repr__(self) -> str:
        return f"<Task {self.job}:{self.index}>"


class TaskMaker:
    """Makes one pool's tasks: what every envelope of the pool carries, and their names."""

    def __init__(self, pool_id: str, initializer: Serialised | None,
                 max_tasks: int | None, strict_versions: bool = False) -> None:
        self._pool_id = pool_id
        self._initializer = initializer
        self._max_tasks = max_tasks
        self._strict_versions = strict_versions

    def wire_id(self, job: int, index: int) -> str:
        """The name of task ``(job, index)`` on the wire."""
        return f"{self._pool_id}:{job}:{index}"

    def task(self, job: int, index: int, kind: str, function: Serialised,
             arguments: Serialised, label: str | None = None) -> Task:
        """Task ``(job, index)``: ``function`` (called ``label``) applied to ``arguments``
        as ``kind`` says, with what the three need on the worker."""
        needs = function.requirements | arguments.requirements
        if self._initializer is not None:
            needs = self._initializer.requirements | needs
        return Task(job, index, TaskEnvelope(
            pool_id=self._pool_id,
            task_id=self.wire_id(job, index),
            kind=kind,
            function=function.payload,
            arguments=arguments.payload,
            initializer=None if self._initializer is None else self._initializer.payload,
            max_tasks=self._max_tasks,
            bundles=needs.bundles,
            versions=needs.versions,
            strict_versions=self._strict_versions,
            label=label,
        ))


def label_of(function: Callable[..., Any]) -> str:
    """What operators see ``function`` called: ``module.qualname`` (``forecast.simulate``),
    through ``functools.partial``; a callable object by its class. A function of the main
    script is named after the script (``forecast.py``: ``forecast``), not ``__main__``."""
    while isinstance(function, functools.partial):
        function = function.func
    named = function if hasattr(function, "__qualname__") else type(function)
    module = (getattr(named, "__module__", None)  # a method of a built-in type has none:
              or getattr(getattr(named, "__objclass__", None), "__module__", "?"))
    if module == "__main__":
        module = _main_module_name()
    return f"{module}.{getattr(named, '__qualname__', type(function).__name__)}"


def _main_module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:  # python -m package.module
        return str(spec.name)
    path = getattr(main, "__file__", None)
    return os.path.splitext(os.path.basename(path))[0] if path else "__main__"


class Function(Generic[T]):
    """A callable, its name for operators (``label``), and its serialised form, made once,
    when a call first needs it: many calls of one callable serialise it once."""

    def __init__(self, call: Callable[..., T]) -> None:
        self.call = call
        self.label = label_of(call)  # what operators see it called
        self._serialised: Serialised | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        return self.call(*args, **kwargs)

    def serialised(self, serialise: Callable[[Any, str], Serialised]) -> Serialised:
        """The callable as tasks carry it, made by ``serialise`` the first time."""
        if self._serialised is None:
            self._serialised = serialise(self.call, "the function")
        return self._serialised
