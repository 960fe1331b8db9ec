"""``cls``: quark vs gluon. ClassifierHead (dropout 0.3), cross-entropy, Adam lr 5e-4 with ReduceLROnPlateau
(factor 0.5, patience 5) on validation accuracy; the best epoch has the highest validation accuracy.

The prediction is the quark probability (softmax of the two logits, class 1). The VGG baseline
(``mode`` vgg, :mod:`jetlib.baseline`) is scored on this task too: its ensemble writes the same
two-class logits (see :mod:`jetlib.models.vgg`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jetlib.metrics import classification
from jetlib.models.heads import ClassifierHead
from jetlib.tasks.registry import register_task
from jetlib.tasks.task import Metric, Recipe, Task
from jetlib.trainer import classification_scores


@register_task("cls")
class Classification(Task):
    title = "Quark/gluon classification"
    section = "classification"
    keys = ("accuracy", "f1", "roc_auc", "rejection_at_eps_s_0.5", "rejection_at_eps_s_0.3")
    report_metrics = {
        "auc": Metric("roc_auc", "ROC AUC", True, ".3f"),
        "rej50": Metric("rejection_at_eps_s_0.5", "1/εB at εS = 0.5", True, ".2f"),
        "rej30": Metric("rejection_at_eps_s_0.3", "1/εB at εS = 0.3", True, ".2f"),
        "acc": Metric("accuracy", "accuracy", True, ".3f"),
        "f1": Metric("f1", "F1", True, ".3f"),
    }
    headline = ("auc", "rej50")
    monitor, higher_is_better = "val_accuracy", True
    lr = 5e-4  # Adam, as the study
    baselines = ("vgg",)  # jetlib baseline: the supervised VGG + SE classifier
    truth_key = "y"  # 1 quark, 0 gluon

    def head_config(self, cfg) -> dict:
        return {"hidden": cfg.head_hidden, "dropout": cfg.head_dropout}

    def head(self, in_dim: int, hidden: int = 256, dropout: float = 0.3) -> ClassifierHead:
        return ClassifierHead(in_dim, hidden, dropout=dropout)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.float(), target)  # out: (B, 2) logits

    def prediction(self, out: torch.Tensor, norm: dict | None) -> torch.Tensor:
        return out.float().softmax(1)[:, 1]  # quark probability

    def recipe(self, params, cfg, fused: bool) -> Recipe:
        optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, fused=fused)  # fused: one kernel on CUDA
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.plateau_factor,
                                                               patience=cfg.plateau_patience)
        return Recipe(optimizer, scheduler, plateau_on="val_accuracy")

    def val_scores(self, p: dict) -> dict:
        return classification_scores({**p, "y": p["truth"]})

    def test_metrics(self, p: dict) -> dict:
        return classification(p["truth"], p["out"])
