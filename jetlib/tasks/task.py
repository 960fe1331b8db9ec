"""What a downstream task is: its head, loss, per-jet prediction, scores, optimiser recipe and result keys.

Fine-tuning, evaluation, the report and the KFP outputs take everything task-specific from a
:class:`Task` (``jetlib.tasks.get(name)``), the way torchvision's references pass a ``criterion``:
none of them branches on a task's name. A task's numbers are in its own units: a probability
for a classifier, GeV for the mass regressor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from jetlib.trainer import predict as predict_split

FINETUNE_MODES = ("finetune", "linear", "scratch")  # what jetlib finetune trains, for every task


@dataclass(frozen=True)
class Metric:
    """A test metric as the report shows it."""

    key: str  # its key in the result's ``scalars``
    label: str  # table and axis label
    higher_is_better: bool
    fmt: str  # format spec of its values, e.g. ".3f"


@dataclass
class Recipe:
    """A task's optimiser and schedule, and when the schedule steps."""

    optimizer: torch.optim.Optimizer
    scheduler: object
    grad_clip: float | None = None  # max gradient norm, or None: no clipping
    plateau_on: str | None = None  # a validation key: the scheduler steps on it after validation; None: per epoch

    def after_epoch(self) -> None:
        if self.plateau_on is None:
            self.scheduler.step()

    def after_validation(self, val: dict) -> None:
        if self.plateau_on is not None:
            self.scheduler.step(val[self.plateau_on])


class Task:
    """One downstream problem. A subclass sets the class attributes and overrides what differs.

    Attributes:
        name: the registered name (``--task``), set by :func:`jetlib.tasks.register_task`.
        title: how the report names it.
        section: the result file's key holding :meth:`test_metrics` (tasks sharing a metric set share it).
        keys: the ``scalars`` this task fills (the rest stay null), also what the KFP UI logs.
        report_metrics: short name -> :class:`Metric`, in table order; ``headline`` names the compared ones.
        monitor, higher_is_better: the validation key that picks the best epoch, and its direction.
        lr: the default learning rate.
        baselines: training modes beside :data:`FINETUNE_MODES` that score on this task.
        truth_key: the batch field that is the truth as it is (read back with the other arrays); None:
            :meth:`truth` computes it.
    """

    name: str = ""
    title: str = ""
    section: str = ""
    keys: tuple[str, ...] = ()
    report_metrics: dict[str, Metric] = {}
    headline: tuple[str, ...] = ()
    monitor: str = ""
    higher_is_better: bool = True
    lr: float = 1e-3
    baselines: tuple[str, ...] = ()
    truth_key: str | None = None

    @property
    def modes(self) -> tuple[str, ...]:
        return FINETUNE_MODES + self.baselines

    # --- the network's end ---
    def head_config(self, cfg) -> dict:
        """The head's keyword arguments from a :class:`~jetlib.finetune.FinetuneConfig` (recorded in model.pt)."""
        return {"hidden": cfg.head_hidden}

    def head(self, in_dim: int, **head_cfg) -> nn.Module:
        raise NotImplementedError

    # --- targets, loss, prediction ---
    def normalisation(self, ds) -> dict | None:
        """Per-dataset constants of the target (from the train split), recorded as ``target`` in model.pt."""
        return None

    def truth(self, batch, norm: dict | None) -> torch.Tensor:
        """(B,) what the prediction is compared with, in the prediction's units."""
        return getattr(batch, self.truth_key)

    def target(self, batch, norm: dict | None) -> torch.Tensor:
        """What the loss compares the network's output with (default: the truth)."""
        return self.truth(batch, norm)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prediction(self, out: torch.Tensor, norm: dict | None) -> torch.Tensor:
        """(B,) per-jet prediction from the network's output."""
        raise NotImplementedError

    def scorer(self, norm: dict | None):
        """``score(out, batch) -> (loss, prediction)`` for :func:`jetlib.trainer.predict`."""
        def score(out: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
            return self.loss(out, self.target(batch, norm)), self.prediction(out, norm)
        return score

    def predict(self, model: nn.Module, loader, autocast, norm: dict | None) -> dict:
        """:func:`jetlib.trainer.predict` over a split with this task's scorer, plus ``"truth"`` (N,)."""
        if self.truth_key is not None:
            p = predict_split(model, loader, autocast, self.scorer(norm))
            p["truth"] = p[self.truth_key]  # already read back: no extra copy
            return p
        truths = []
        score = self.scorer(norm)

        def with_truth(out, batch):
            truths.append(self.truth(batch, norm).float())
            return score(out, batch)
        p = predict_split(model, loader, autocast, with_truth)
        p["truth"] = torch.cat(truths).cpu().numpy() if truths else np.zeros(0, np.float32)
        return p

    # --- training and scores ---
    def recipe(self, params, cfg, fused: bool) -> Recipe:
        raise NotImplementedError

    def val_scores(self, p: dict) -> dict:
        """Validation scores (``val_*``) from :meth:`predict`'s output; one of them is ``monitor``."""
        raise NotImplementedError

    def test_metrics(self, p: dict) -> dict:
        """The result file's ``section``: test metrics from :meth:`predict`'s output."""
        raise NotImplementedError
