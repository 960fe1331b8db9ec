"""Downstream tasks: one :class:`~jetlib.tasks.task.Task` per problem, registered by name.

``cls`` (:mod:`~jetlib.tasks.classification`, quark vs gluon) and ``reg``
(:mod:`~jetlib.tasks.regression`, jet mass). Fine-tuning, evaluation, the report and the KFP
outputs loop over :func:`all_tasks` or take :func:`get` (``blob["task"]``), never a name.

A new task is one file with a registered subclass, plus its import below::

    @register_task("pt_high")
    class PtAboveMedian(Classification):
        truth_key = None
        def truth(self, batch, norm): return (batch.pt > norm["median"]).long()
        ...
"""

from __future__ import annotations

from jetlib.tasks.registry import (
    HEADLINE,
    METRICS,
    TASKS,
    all_tasks,
    get,
    register_task,
    scalar_keys,
    sections,
    unregister_task,
)
from jetlib.tasks.task import FINETUNE_MODES, Metric, Recipe, Task

# isort: split
# the built-in tasks register themselves on import: one line each
from jetlib.tasks.classification import Classification
from jetlib.tasks.regression import MassRegression

__all__ = ["FINETUNE_MODES", "HEADLINE", "METRICS", "TASKS", "Classification", "MassRegression", "Metric", "Recipe",
           "Task", "all_tasks", "get", "register_task", "scalar_keys", "sections", "unregister_task"]
