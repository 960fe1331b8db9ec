"""What the non-contrastive losses share: input checks, the global batch under DDP, off-diagonals."""

from __future__ import annotations

import torch

from jetlib import dist


def check_pair(z1: torch.Tensor, z2: torch.Tensor, name: str) -> None:
    """Raise ValueError unless z1 and z2 are (B, D) tensors of the same shape."""
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"{name} takes two (B, D) tensors of the same shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")


def global_batch(z: torch.Tensor, gather_distributed: bool) -> torch.Tensor:
    """(B, D) on each rank -> (W * B, D), differentiable (:func:`jetlib.dist.gather`); identity on one process.

    Every rank then computes the loss of the whole global batch. The gather's backward sums
    the W identical ranks' gradients into each rank's own slice (W times dL/dz) and DDP
    divides the parameter gradients by W, so each parameter gets exactly dL/dtheta of the
    one-process loss on the global batch."""
    if gather_distributed and dist.world_size() > 1:
        return dist.gather(z)
    return z


def global_pair(z1: torch.Tensor, z2: torch.Tensor, name: str,
                gather_distributed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views as fp32 (N, D) global batches, checked: same shape, and N >= 2 (a variance needs two).

    Raises:
        ValueError: naming ``name``, the loss, when either check fails."""
    check_pair(z1, z2, name)
    x, y = global_batch(z1.float(), gather_distributed), global_batch(z2.float(), gather_distributed)
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 jets in the global batch, got {x.shape[0]}")
    return x, y


def off_diagonal(c: torch.Tensor) -> torch.Tensor:
    """The D * (D - 1) off-diagonal entries of a square (D, D) matrix, flattened."""
    d = c.shape[0]
    return c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()
