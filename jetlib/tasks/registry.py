"""The registry of tasks: ``register_task``, ``get``, ``all_tasks``, the live tables (re-exported by jetlib.tasks)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from jetlib.registry import Registry
from jetlib.tasks.task import Metric, Task


def _instance(name: str, cls) -> Task:
    task = cls()  # one instance per task: a Task holds no state of a run
    task.name = name
    return task


# the built-in tasks: name -> the module that registers it (imported on first use)
BUILTIN = {
    "cls": "jetlib.tasks.classification",
    "reg": "jetlib.tasks.regression",
}

_REGISTRY = Registry("task", _instance, BUILTIN)
TASKS = _REGISTRY.names  # a live view: argparse choices and messages see every registered task
get = _REGISTRY.get
unregister_task = _REGISTRY.unregister


def register_task(name: str):
    """Register a :class:`Task` subclass (instantiated once) as ``name``."""
    return _REGISTRY.register(name)


def all_tasks() -> list[Task]:
    return _REGISTRY.values()


def scalar_keys() -> tuple[str, ...]:
    """Every task's scalars, in registration order: the keys of every result's ``scalars``."""
    return tuple(dict.fromkeys(k for t in _REGISTRY.values() for k in t.keys))


def sections() -> tuple[str, ...]:
    """The result sections of every task (each result has them all; null but its own task's)."""
    return tuple(dict.fromkeys(t.section for t in _REGISTRY.values()))


class _Metrics(Mapping):
    """Report metric name -> :class:`Metric` over every registered task, read at each use."""

    def _table(self) -> dict[str, Metric]:
        return {n: m for t in _REGISTRY.values() for n, m in t.report_metrics.items()}

    def __getitem__(self, name):
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


class _Headline(Sequence):
    """The report metrics compared in the headline, every task's in registration order, read at each use."""

    def _names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for t in _REGISTRY.values() for n in t.headline))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())


METRICS: Mapping[str, Metric] = _Metrics()
HEADLINE: Sequence[str] = _Headline()
