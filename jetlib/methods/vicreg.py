"""VICReg (Bardes, Ponce and LeCun, ICLR 2022): an expander on the encoder, variance-invariance-covariance loss.

Paper: a ResNet-50's 2048-d embedding feeds a 3-layer expander 8192-8192-8192 (Linear - BN -
ReLU twice, then Linear), four times the embedding's width; the loss weights are lambda = mu = 25,
nu = 1 (Sec. 4.1). Here, scaled to the ResNet-15's 512-d embedding by the same factor of four:
512 -> 2048 -> 2048 -> 2048 (``proj_dim``, every layer), the paper's weights unchanged (the
loss does not depend on the expander's width: :mod:`jetlib.losses.vicreg`). The loss is computed
on the global batch under DDP.

Recipe (:attr:`VICReg.recipe`, under a preset, a tuned recipe and the user's settings): LARS
(:mod:`jetlib.methods.lars`; the paper's optimiser, Sec. 4.1) at a base learning
rate of 0.3 per 256 jets scaled linearly with the batch, weight decay 1e-4 (solo-learn
``scripts/pretrain/cifar/vicreg.yaml``, its small-dataset recipe; the paper's 0.2 per 256 and 1e-6
are ImageNet's at batch 2048), 10 warmup epochs then a cosine to zero (the paper, and solo-learn's
``warmup_cosine``); the loss weights 25, 25, 1 are the paper's and solo-learn's alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jetlib.losses import VICRegLoss
from jetlib.methods import register_method
from jetlib.methods.base import Method, mlp
from jetlib.schemas import NonNegative, Width, check


@dataclass(frozen=True)
class VICRegParams:
    proj_dim: Width = 2048  # every layer's width (equal, as the paper's 8192s); the loss sees the last
    sim_weight: NonNegative = 25.0  # lambda, invariance
    var_weight: NonNegative = 25.0  # mu, variance
    cov_weight: NonNegative = 1.0  # nu, covariance

    def __post_init__(self):
        check(self)


@register_method("vicreg")
class VICReg(Method):
    """Encoder + expander + VICReg loss."""

    Params = VICRegParams
    recipe = {"optimizer": "lars", "lr": 0.3, "lr_batch": 256, "weight_decay": 1e-4, "warmup_epochs": 10}

    @classmethod
    def search_space(cls, params) -> dict:
        # the invariance and variance weights with the covariance weight at 1, as the paper's ablation of
        # its loss coefficients (Bardes et al. 2022)
        return {"sim_weight": (5.0, 50.0, True), "var_weight": (5.0, 50.0, True)}

    def __init__(self, encoder, params: VICRegParams):
        super().__init__(encoder, params)
        self.projector = mlp([encoder.num_features, params.proj_dim, params.proj_dim, params.proj_dim])
        self.loss = VICRegLoss(params.sim_weight, params.var_weight, params.cov_weight)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        h1, h2 = self.features(v1, v2)  # the expander per view: its BatchNorm normalises each view's batch
        return self.loss(self.projector(h1), self.projector(h2))
