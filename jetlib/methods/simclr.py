"""SimCLR (Chen et al. 2020): a projector on the encoder and InfoNCE with a learned temperature.

Projector Linear(512, ``proj_hidden``) - ReLU - Linear(``proj_dim``), the paper's 2-layer MLP on the
ResNet-15's 512-d embedding; the loss is InfoNCE over the global batch (negatives gathered from
every rank), its temperature learned in log space from ``temperature`` (the study's 0.07).

Recipe: the pretraining config's defaults are SimCLR's, the seed study's tuned ones (AdamW at a
peak learning rate of 1e-3 for the global batch of 256, weight decay 1e-4 on weights only, 10
warmup epochs then a cosine to zero), so :attr:`SimCLR.recipe` is empty. The paper's LARS recipe
(Chen et al. 2020, Sec. 3, "default setting": 0.3 per 256, weight decay 1e-6; solo-learn's
``scripts/pretrain/cifar/simclr.yaml``: 0.4 per 256, 1e-4, temperature 0.2) is
``--set optimizer=lars --set lr_batch=256 --lr 0.4 --set weight_decay=1e-4``.

Learned, the temperature drifts towards its clamp at 0.01 (measured on fixed embeddings: a lower
temperature always sharpens the already-matched positives); each epoch's value is in
``metrics.json``. ``learn_temperature=false`` runs the paper's fixed temperature instead
(Chen et al. 2020, Table 5 compares fixed temperatures from 0.05 to 1, 0.1 best in its ImageNet
setting; solo-learn's CIFAR recipe uses 0.2): a buffer, out of the optimiser, never moved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jetlib.losses import InfoNCELoss
from jetlib.methods import register_method
from jetlib.methods.base import Method
from jetlib.models.heads import ProjectionHead
from jetlib.schemas import Width, check, real

Temperature = real(gt=0, le=100)  # InfoNCE divides by it: 0 or inf leaves no gradient


@dataclass(frozen=True)
class SimCLRParams:
    proj_hidden: Width = 512  # projector hidden width
    proj_dim: Width = 128  # projector output: where the loss is computed
    temperature: Temperature = 0.07  # InfoNCE temperature: the initial value when learned, else the fixed one
    learn_temperature: bool = True  # False: the paper's fixed temperature (a buffer, not trained)

    def __post_init__(self):
        check(self)


@register_method("simclr")
class SimCLR(Method):
    """Encoder + projector + loss in one module, so DDP syncs the temperature with the weights."""

    Params = SimCLRParams
    tune_fixed = {"learn_temperature": False}

    @classmethod
    def search_space(cls, params) -> dict:
        # around the fixed values the SimCLR paper's Table 5 compares
        return {"temperature": (0.03, 0.5, True)}

    def __init__(self, encoder, params: SimCLRParams):
        super().__init__(encoder, params)
        self.projector = ProjectionHead(encoder.num_features, params.proj_hidden, params.proj_dim)
        self.loss = InfoNCELoss(params.temperature, learnable=params.learn_temperature)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        b = v1.shape[0]
        z = self.projector(self.encoder.forward_features(torch.cat([v1, v2])))  # (2B, D): one pass
        return self.loss(z[:b], z[b:])

    def stats(self) -> dict:
        return {"temperature": self.loss.temperature}
