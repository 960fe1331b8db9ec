"""Barlow Twins (Zbontar et al., ICML 2021): a projector on the encoder, cross-correlation towards the identity.

Paper: a ResNet-50's 2048-d embedding feeds a 3-layer projector 8192-8192-8192 (Linear - BN -
ReLU twice, then Linear); the off-diagonal weight is lambda = 0.0051 at D = 8192. Here, scaled to
the ResNet-15's 512-d embedding by the same factor of four: 512 -> 2048 -> 2048 -> 2048
(``proj_dim``, every layer), and lambda scaled as 1/D (0.0204 at D = 2048:
:func:`jetlib.losses.barlowtwins.default_lambda`) unless ``lambd`` is set; any lambda >= 0 is taken
as given, 0 included (the on-diagonal term alone), ``none`` meaning the scaled default. The cross-correlation
is that of the global batch under DDP.

Recipe (:attr:`BarlowTwins.recipe`, under a preset, a tuned recipe and the user's settings): AdamW at
1e-3 as given (no batch scaling), weight decay 1e-4, 10 warmup epochs then a cosine to zero: the
config's defaults, SimCLR's, kept because Barlow Twins trains on them here and did not on its paper's
optimiser. The paper's and solo-learn's LARS (``scripts/pretrain/cifar/barlow.yaml``: 0.3 per 256 jets,
weight decay 1e-4) collapsed the encoder in the methods study (4,000 jets, ``cpu`` preset, 3 epochs:
final embeddings of effective rank 1.8 to 17, three of four under the collapse threshold, over lambdas of
0.002 to 0.033 and rates of 0.2 to 0.38 per 256, with and without the loss scale below; fine-tuning from
them stayed at chance), where on AdamW it kept an effective rank of 43 to 47. It stays one setting away:
``--set optimizer=lars --set lr=0.3 --set lr_batch=256``. The loss is multiplied by ``scale_loss`` = 0.1,
solo-learn's (the authors' first code had ``--scale-loss`` 0.024), which matters under LARS, whose norms
and biases take plain SGD steps of the loss's own size (about 2,000 at D = 2048 at the start).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jetlib.losses import BarlowTwinsLoss
from jetlib.losses.barlowtwins import default_lambda
from jetlib.methods import register_method
from jetlib.methods.base import Method, mlp
from jetlib.schemas import NonNegative, Positive, Width, check


@dataclass(frozen=True)
class BarlowTwinsParams:
    proj_dim: Width = 2048  # every layer's width (equal, as the paper's 8192s); the loss sees the last
    lambd: NonNegative | None = None  # off-diagonal weight, 0 allowed; None: the paper's 0.0051 scaled as 1/D
    scale_loss: Positive = 0.1  # the factor on the loss (solo-learn's); LARS's plain-SGD norms and biases feel it

    def __post_init__(self):
        check(self)


@register_method("barlowtwins")
class BarlowTwins(Method):
    """Encoder + projector + Barlow Twins loss."""

    Params = BarlowTwinsParams
    recipe = {"optimizer": "adamw", "lr": 1e-3, "lr_batch": 0, "weight_decay": 1e-4, "warmup_epochs": 10}

    @classmethod
    def search_space(cls, params) -> dict:
        # a tenth to ten times the paper's 0.0051 scaled to the projector's width as 1/D
        centre = default_lambda(params.proj_dim)
        return {"lambd": (centre / 10, centre * 10, True)}

    def __init__(self, encoder, params: BarlowTwinsParams):
        super().__init__(encoder, params)
        self.projector = mlp([encoder.num_features, params.proj_dim, params.proj_dim, params.proj_dim])
        self.loss = BarlowTwinsLoss(params.lambd)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        h1, h2 = self.features(v1, v2)  # the projector per view, as the authors' code
        return self.params.scale_loss * self.loss(self.projector(h1), self.projector(h2))
