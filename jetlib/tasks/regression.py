"""``reg``: jet mass m0. RegressionHead (residual blocks, deep supervision), Huber (SmoothL1) loss summed
over depths on the mass normalised with train-split statistics, AdamW lr 1e-3 with
CosineAnnealingWarmRestarts (T0 = 10, T_mult = 2) and gradient clipping at 1.0; the best epoch has
the lowest validation MAE in GeV.

The prediction is the deepest output de-normalised to GeV.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from jetlib.metrics import regression
from jetlib.models.heads import RegressionHead
from jetlib.tasks.registry import register_task
from jetlib.tasks.task import Metric, Recipe, Task


@register_task("reg")
class MassRegression(Task):
    title = "Jet-mass regression"
    section = "regression"
    keys = ("mse", "rmse", "mae", "r2", "relative_resolution")
    report_metrics = {
        "mae": Metric("mae", "mass MAE (GeV)", False, ".2f"),
        "rmse": Metric("rmse", "mass RMSE (GeV)", False, ".2f"),
        "r2": Metric("r2", "R²", True, ".3f"),
        "res": Metric("relative_resolution", "relative resolution σ(Δm/m)", False, ".3f"),
    }
    headline = ("mae",)
    monitor, higher_is_better = "val_mae", False
    lr = 1e-3  # AdamW, as the study
    truth_key = "m0"  # GeV

    def head_config(self, cfg) -> dict:
        return {"hidden": cfg.head_hidden, "depth": cfg.reg_depth}

    def head(self, in_dim: int, hidden: int = 256, depth: int = 3) -> RegressionHead:
        return RegressionHead(in_dim, hidden, depth=depth)

    def normalisation(self, ds) -> dict:
        stats = ds.manifest["stats"][self.truth_key]  # train split only (jetlib.data.ingest)
        return {"mean": stats["mean"], "std": stats["std"]}

    def target(self, batch, norm: dict) -> torch.Tensor:
        return (self.truth(batch, norm) - norm["mean"]) / norm["std"]

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # deep supervision: out is (depth, B); the Huber losses of every depth are added
        return sum(F.smooth_l1_loss(o.float(), target) for o in out)

    def prediction(self, out: torch.Tensor, norm: dict) -> torch.Tensor:
        return out[-1].float() * norm["std"] + norm["mean"]  # the deepest output, de-normalised: GeV

    def recipe(self, params, cfg, fused: bool) -> Recipe:
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=cfg.restart_t0,
                                                                         T_mult=cfg.restart_mult)
        return Recipe(optimizer, scheduler, grad_clip=cfg.grad_clip)

    def val_scores(self, p: dict) -> dict:
        err = p["out"] - p["truth"]
        return {"val_loss": p["loss"], "val_mae": float(np.abs(err).mean()),
                "val_rmse": float(np.sqrt((err**2).mean()))}

    def test_metrics(self, p: dict) -> dict:
        return regression(p["truth"], p["out"])
