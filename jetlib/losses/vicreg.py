"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce and LeCun, ICLR 2022).

For two (B, D) batches of embeddings Z, Z' of the same B jets (Bardes et al. 2022, Sec. 3,
eqs. 1-6, and Algorithm 1):

* invariance ``s(Z, Z') = mean over b, j of (z_bj - z'_bj)^2`` (``F.mse_loss``);
* variance ``v(Z) = 1/D sum_j max(0, 1 - sqrt(Var(z^j) + eps))``, a hinge on each
  dimension's standard deviation over the batch (unbiased variance, eps = 1e-4), so that
  no dimension's spread falls below 1: the term that prevents collapse;
* covariance ``c(Z) = 1/D sum_{i != j} C(Z)_ij^2`` with ``C(Z)`` the (D, D) covariance over
  the batch, divided by B - 1: decorrelates the dimensions.

``loss = 25 s + 25 (v(Z) + v(Z')) / 2 + 1 (c(Z) + c(Z'))``: lambda = mu = 25, nu = 1, the
paper's weights (Sec. 4.1; the defaults of the authors' ``--sim-coeff``, ``--std-coeff``
and ``--cov-coeff``). The two variance terms are *averaged*, as in the authors' code
(facebookresearch/vicreg, main_vicreg.py, ``VICReg.forward``), with which the published
weights were tuned; the paper's eq. 6 writes their sum. A fully collapsed batch therefore
costs ``25 * (1 - sqrt(1e-4)) = 24.75``. Nothing here depends on the projector's width D:
the variance term is a mean over dimensions and the covariance term is divided by D, so
the paper's weights carry over unchanged to a smaller projector.

Under DDP all three terms are statistics of the *global* batch: the embeddings are
gathered with gradients (:func:`jetlib.dist.gather`, as the authors' ``FullGatherLayer``
does) and every rank returns the one-process loss of the global batch.

Computed in fp32 inside autocast: the variance hinge takes ``sqrt(var + 1e-4)``, whose
derivative ``1 / (2 sqrt(var + 1e-4))`` reaches 50 for a collapsing dimension, and the
covariance term sums D * (D - 1) squared entries; in bf16 (8-bit mantissa, relative
rounding 4e-3) both the small variances and the sum of ~10^6 squares lose most digits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jetlib.losses.common import global_pair, off_diagonal


class VICRegLoss(nn.Module):
    """VICReg loss of two views' embeddings.

    Args:
        sim_weight: lambda, the invariance term's weight (paper: 25).
        var_weight: mu, the variance term's weight (paper: 25).
        cov_weight: nu, the covariance term's weight (paper: 1).
        eps: added to each dimension's variance before the square root (paper: 1e-4).
        gather_distributed: under DDP, compute every term on the global batch.

    Raises:
        ValueError: from ``forward``, when the inputs are not two (B, D) tensors of one shape
            or the global batch holds fewer than 2 jets (a variance needs two).

    Examples:
        >>> loss = VICRegLoss()
        >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        >>> loss(z1, z2).shape
        torch.Size([])
    """

    def __init__(self, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
                 eps: float = 1e-4, gather_distributed: bool = True):
        super().__init__()
        self.sim_weight, self.var_weight, self.cov_weight = sim_weight, var_weight, cov_weight
        self.eps = eps
        self.gather_distributed = gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The scalar loss of the global batch. z1, z2: (B, D), the two views of B jets."""
        return sum(self.terms(z1, z2).values())

    def terms(self, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"invariance", "variance", "covariance"}``, each already multiplied by its weight."""
        with torch.autocast(z1.device.type, enabled=False):
            x, y = global_pair(z1, z2, "VICRegLoss", self.gather_distributed)  # (N, D) each
            n, d = x.shape
            invariance = F.mse_loss(x, y)
            x, y = x - x.mean(dim=0), y - y.mean(dim=0)
            std_x = torch.sqrt(x.var(dim=0) + self.eps)  # (D,)
            std_y = torch.sqrt(y.var(dim=0) + self.eps)
            variance = F.relu(1 - std_x).mean() / 2 + F.relu(1 - std_y).mean() / 2
            cov_x, cov_y = x.T @ x / (n - 1), y.T @ y / (n - 1)  # (D, D)
            covariance = off_diagonal(cov_x).pow(2).sum() / d + off_diagonal(cov_y).pow(2).sum() / d
            return {"invariance": self.sim_weight * invariance, "variance": self.var_weight * variance,
                    "covariance": self.cov_weight * covariance}
