"""Downstream tasks: one :class:`~jetlib.tasks.task.Task` per problem, registered by name.

``cls`` (:mod:`~jetlib.tasks.classification`, quark vs gluon) and ``reg``
(:mod:`~jetlib.tasks.regression`, jet mass). Fine-tuning, evaluation, the report and the KFP
outputs loop over :func:`all_tasks` or take :func:`get` (``blob["task"]``), never a name.

A new task is one file with a registered subclass, plus its name -> module line in
:data:`~jetlib.tasks.registry.BUILTIN` (the networks and the methods register the same way)::

    @register_task("pt_high")
    class PtAboveMedian(Classification):
        truth_key = None
        def truth(self, batch, norm): return (batch.pt > norm["median"]).long()
        ...
"""

from __future__ import annotations

# the two built-in tasks' classes, for subclassing (importing them registers both)
from jetlib.tasks.classification import Classification
from jetlib.tasks.registry import (
    BUILTIN,
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
from jetlib.tasks.regression import MassRegression
from jetlib.tasks.task import FINETUNE_MODES, Metric, Recipe, Task

__all__ = ["BUILTIN", "FINETUNE_MODES", "HEADLINE", "METRICS", "TASKS", "Classification", "MassRegression", "Metric",
           "Recipe", "Task", "all_tasks", "get", "register_task", "scalar_keys", "sections", "unregister_task"]
