"""BYOL (Grill et al., NeurIPS 2020): an online network predicts a momentum target network's projection.

Paper: a ResNet-50's 2048-d embedding feeds a projector Linear(4096) - BN - ReLU - Linear(256) and
the online side adds a predictor of the same shape (256 -> 4096 -> 256); the target network
(encoder and projector) is an exponential moving average of the online one, its momentum rising
from 0.996 to 1 on a cosine over training (Sec. 3.2). Here, scaled to the ResNet-15's 512-d
embedding: hidden widths 1024 (twice the embedding, as 4096 is for 2048; ``proj_hidden``,
``pred_hidden``: 0 means ``proj_hidden``), the 256-d output and the momentum schedule unchanged.

The target is built as a copy of the freshly initialised online network (the same seed on every
rank, so the same weights), takes no gradient and is left out of the optimiser; it is updated in
:meth:`BYOL.after_step` from the online weights that DDP has just made identical on every rank,
so it stays identical across ranks. It is part of the module's state, so every checkpoint holds
it and a resume continues bit-for-bit.

Recipe (:attr:`BYOL.recipe`, under a preset, a tuned recipe and the user's settings): LARS
(:mod:`jetlib.methods.lars`; the paper's optimiser, Sec. 3.2) at a base learning rate of 1.0 per 256
jets scaled linearly with the batch, weight decay 1e-5 (solo-learn ``scripts/pretrain/cifar/byol.yaml``,
its small-dataset recipe; the paper's 0.2 per 256 and 1.5e-6 are ImageNet's at batch 4096), 10 warmup
epochs then a cosine to zero (the paper's Sec. 3.2, solo-learn's ``warmup_cosine``); the EMA momentum
from 0.99 to 1 on a cosine (``base_momentum``: solo-learn's CIFAR ``base_tau: 0.99``; the paper's 0.996,
Sec. 3.2, is for 1000 ImageNet epochs, and a shorter run needs a target that follows faster).

The projector and predictor (online and target) see each view as its own batch: their BatchNorm
statistics are those of one view's B jets, as DeepMind's ``byol_experiment.py`` (one network call
per view) and lightly's BYOL example do; pooling the two views would normalise each view with the
other's statistics too. The encoder still takes both views in one pass: its GroupNorm is per jet.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from jetlib.losses import byol_loss, byol_momentum, ema_update
from jetlib.methods import register_method
from jetlib.methods.base import Method, mlp
from jetlib.schemas import MAX_WIDTH, Momentum, Width, check, whole

PredHidden = whole(0, MAX_WIDTH)


@dataclass(frozen=True)
class BYOLParams:
    proj_hidden: Width = 1024  # projector hidden width
    proj_dim: Width = 256  # projector (and predictor) output: where the loss is computed
    pred_hidden: PredHidden = 0  # predictor hidden width; 0: proj_hidden
    base_momentum: Momentum = 0.99  # the target's EMA momentum at step 0 (1 at the last step)

    def __post_init__(self):
        check(self)


@register_method("byol")
class BYOL(Method):
    """Online encoder + projector + predictor; target encoder + projector (EMA, no gradient)."""

    Params = BYOLParams
    recipe = {"optimizer": "lars", "lr": 1.0, "lr_batch": 256, "weight_decay": 1e-5, "warmup_epochs": 10}

    @classmethod
    def search_space(cls, params) -> dict:
        # the base EMA momentum from a fast-moving target to the paper's ImageNet 0.996 and beyond
        return {"base_momentum": (0.9, 0.999, False)}

    def __init__(self, encoder, params: BYOLParams):
        super().__init__(encoder, params)
        self.projector = mlp([encoder.num_features, params.proj_hidden, params.proj_dim])
        self.predictor = mlp([params.proj_dim, params.pred_hidden or params.proj_hidden, params.proj_dim])
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum = params.base_momentum  # the last update's, for the epoch record

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        b = v1.shape[0]
        h1, h2 = self.features(v1, v2)  # (B, F) each
        p1, p2 = self.predictor(self.projector(h1)), self.predictor(self.projector(h2))  # per view: BN per view
        with torch.no_grad():
            t = self.target_encoder.forward_features(torch.cat([v1, v2]))  # (2B, F)
            z1, z2 = self.target_projector(t[:b]), self.target_projector(t[b:])
        return byol_loss(p1, z2) + byol_loss(p2, z1)  # symmetrised: L + L~ (Sec. 3.1)

    def after_step(self, step: int, total_steps: int) -> None:
        self.momentum = byol_momentum(min(step, total_steps), total_steps, self.params.base_momentum)
        ema_update(self.target_encoder, self.encoder, self.momentum)
        ema_update(self.target_projector, self.projector, self.momentum)

    def stats(self) -> dict:
        return {"ema_momentum": self.momentum}
