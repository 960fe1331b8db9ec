"""The registry of tasks: ``register_task``, ``get``, ``all_tasks``, the live tables (re-exported by jetlib.tasks)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from jetlib.errors import ConfigError
from jetlib.tasks.task import Metric, Task

_TASKS: dict[str, Task] = {}
TASKS = _TASKS.keys()  # a live view: argparse choices and messages see every registered task


def register_task(name: str):
    """Register a :class:`Task` subclass (instantiated once) as ``name``."""
    def add(cls):
        if name in _TASKS:
            raise ValueError(f"a task named {name!r} is registered already")
        task = cls()
        task.name = name
        _TASKS[name] = task
        return cls
    return add


def unregister_task(name: str) -> None:
    """Remove a registration (tests register toy tasks and take them away again)."""
    _TASKS.pop(name, None)


def get(name: str) -> Task:
    """The task registered as ``name``.

    Raises:
        ConfigError: no such task.
    """
    if not isinstance(name, str) or name not in _TASKS:
        raise ConfigError(f"unknown task {str(name)[:40]!r}: choose one of {', '.join(TASKS)}")
    return _TASKS[name]


def all_tasks() -> list[Task]:
    return list(_TASKS.values())


def scalar_keys() -> tuple[str, ...]:
    """Every task's scalars, in registration order: the keys of every result's ``scalars``."""
    return tuple(dict.fromkeys(k for t in _TASKS.values() for k in t.keys))


def sections() -> tuple[str, ...]:
    """The result sections of every task (each result has them all; null but its own task's)."""
    return tuple(dict.fromkeys(t.section for t in _TASKS.values()))


class _Metrics(Mapping):
    """Report metric name -> :class:`Metric` over every registered task, read at each use."""

    def _table(self) -> dict[str, Metric]:
        return {n: m for t in _TASKS.values() for n, m in t.report_metrics.items()}

    def __getitem__(self, name):
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


class _Headline(Sequence):
    """The report metrics compared in the headline, every task's in registration order, read at each use."""

    def _names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for t in _TASKS.values() for n in t.headline))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())


METRICS: Mapping[str, Metric] = _Metrics()
HEADLINE: Sequence[str] = _Headline()
