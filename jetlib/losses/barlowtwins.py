"""Barlow Twins: redundancy reduction between two views (Zbontar, Jing, Misra, LeCun and Deny, ICML 2021).

The embeddings of each view are standardised along the batch dimension (mean 0, standard
deviation 1 per dimension), and their (D, D) cross-correlation ``C_ij = 1/N sum_b
zA_bi zB_bj`` is pushed towards the identity (Zbontar et al. 2021, Sec. 2, eqs. 1-2, and
Algorithm 1):

``loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``.

The standardisation is the one the authors' code applies (facebookresearch/barlowtwins,
main.py, ``BarlowTwins.forward``: ``BatchNorm1d(affine=False)``, made a SyncBatchNorm): the
biased variance plus eps = 1e-5, which makes ``C`` exactly the Pearson correlation of
eq. 2 up to that eps; ``C_ii = 1`` for identical views, and a dead dimension (variance 0)
gives ``C_ii = 0`` instead of a NaN.

lambda: the paper uses 5.1e-3 with an 8192-d projector. The off-diagonal sum has
D * (D - 1) entries against the diagonal's D, so the balance between the two terms
depends on D through lambda * D. The default keeps the paper's balance at any width:
``lambda = 0.0051 * 8192 / D`` (0.0204 for D = 2048, 0.0816 for D = 512), which equals the
paper's value at its D. Tsai et al. 2021 ("A note on connecting Barlow Twins with
negative-sample-free contrastive learning") use lambda = 1/D instead, a 42 times weaker
redundancy term; pass ``lambd`` to choose another.

Under DDP the standardisation and C are statistics of the *global* batch: the
embeddings are gathered with gradients (:func:`jetlib.dist.gather`), so the loss and every
gradient equal one process's on the global batch. (The authors' code sums C over the
ranks with ``torch.distributed.all_reduce``, which autograd does not differentiate
through; the gather keeps the whole computation differentiable.)

Computed in fp32 inside autocast: C sums N products per entry, and near convergence
the diagonal term is a sum of D squares of ``1 - C_ii`` ~ 1e-3; bf16's relative rounding
of 4e-3 on C_ii alone exceeds that.
"""

from __future__ import annotations

import torch
from torch import nn

from jetlib.losses.common import global_pair, off_diagonal

PAPER_LAMBDA, PAPER_DIM = 0.0051, 8192


def default_lambda(dim: int) -> float:
    """lambda for a D-dimensional projector: the paper's 0.0051 at D = 8192, scaled as 1/D."""
    return PAPER_LAMBDA * PAPER_DIM / dim


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins loss of two views' embeddings.

    Args:
        lambd: weight of the off-diagonal (redundancy) term; None: ``default_lambda(D)``.
        eps: added to each dimension's (biased) batch variance before standardising (BatchNorm's 1e-5).
        gather_distributed: under DDP, standardise and correlate over the global batch.

    Raises:
        ValueError: from ``forward``, when the inputs are not two (B, D) tensors of one shape
            or the global batch holds fewer than 2 jets.

    Examples:
        >>> loss = BarlowTwinsLoss()
        >>> z = torch.randn(64, 8)
        >>> float(loss(z, z)) < float(loss(z, torch.randn(64, 8)))
        True
    """

    def __init__(self, lambd: float | None = None, eps: float = 1e-5, gather_distributed: bool = True):
        super().__init__()
        if lambd is not None and lambd < 0:
            raise ValueError(f"BarlowTwinsLoss lambd must be >= 0, got {lambd}")
        self.lambd = lambd
        self.eps = eps
        self.gather_distributed = gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The scalar loss of the global batch. z1, z2: (B, D), the two views of B jets."""
        with torch.autocast(z1.device.type, enabled=False):
            a, b = global_pair(z1, z2, "BarlowTwinsLoss", self.gather_distributed)  # (N, D) each
            n, d = a.shape
            c = self._standardise(a).T @ self._standardise(b) / n  # (D, D)
            lambd = default_lambda(d) if self.lambd is None else self.lambd
            on_diag = (1 - torch.diagonal(c)).pow(2).sum()
            return on_diag + lambd * off_diagonal(c).pow(2).sum()

    def _standardise(self, z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(dim=0)
        return z / torch.sqrt(z.pow(2).mean(dim=0) + self.eps)
