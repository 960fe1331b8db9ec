"""BYOL: bootstrap your own latent (Grill et al., NeurIPS 2020): the loss, the EMA and its schedule.

An online network (encoder, projector, predictor q) predicts a target network's
projection of the other view; the target (encoder, projector) is an exponential moving
average of the online weights and receives no gradient.

* ``byol_loss(p, z)``: eq. 2 of Grill et al. 2020, ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)``,
  averaged over the batch, for ONE direction: p the online prediction of view 1, z the
  target projection of view 2. The caller symmetrises, as the paper's total loss
  ``L + L~`` does (Sec. 3.1): ``byol_loss(p1, z2) + byol_loss(p2, z1)``, values in [0, 8].
  z is detached inside (the paper's stop-gradient on the target), whatever the caller did.
* ``ema_update(target, online, momentum)``: ``xi <- tau xi + (1 - tau) theta`` for every
  parameter (Sec. 3.1), in place, without autograd. Buffers (BatchNorm's running
  statistics) are copied from the online network: they are not learned, and DDP keeps
  the online buffers identical across ranks, so the target stays identical across ranks
  too (a target's own running statistics would drift apart, one local batch each).
* ``byol_momentum(step, total, base)``: ``tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2``,
  rising from ``tau_base`` (0.996 in the paper, Sec. 3.2) at step 0 to 1 at step K.

Under DDP the loss is a per-jet mean: each rank returns its local batch's mean, whose mean
over ranks (DDP averages the gradients) is the global batch's; no gather is needed.

Computed in fp32 inside autocast: near convergence cos(p, z) -> 1 and 2 - 2 cos cancels;
bf16 resolves cos near 1 only in steps of 2^-8, so the loss and its gradient would be
quantised to ~8e-3, the size of the whole signal late in training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BASE_MOMENTUM = 0.996


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``2 - 2 cos(p_b, z_b)``, z detached. p, z: (B, D). One direction only.

    Raises:
        ValueError: when p and z are not two (B, D) tensors of one shape.
    """
    if p.dim() != 2 or p.shape != z.shape:
        raise ValueError(f"byol_loss takes two (B, D) tensors of the same shape, got {tuple(p.shape)} "
                         f"and {tuple(z.shape)}")
    with torch.autocast(p.device.type, enabled=False):
        p = F.normalize(p.float(), dim=1)
        z = F.normalize(z.detach().float(), dim=1)
        return (2 - 2 * (p * z).sum(dim=1)).mean()


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: each target parameter <- momentum * itself + (1 - momentum) * the online one; buffers copied.

    Raises:
        ValueError: when momentum is outside [0, 1] or the two modules' parameters or
            buffers differ in names or shapes.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must lie in [0, 1], got {momentum}")
    for kind, t_items, o_items in (("parameters", target.named_parameters(), online.named_parameters()),
                                   ("buffers", target.named_buffers(), online.named_buffers())):
        t_items, o_items = dict(t_items), dict(o_items)
        shapes = {k: v.shape for k, v in t_items.items()}
        if shapes != {k: v.shape for k, v in o_items.items()}:
            raise ValueError(f"EMA target and online network differ in their {kind}' names or shapes")
        for name, t in t_items.items():
            o = o_items[name]
            if kind == "parameters":
                t.lerp_(o.to(t.dtype), 1.0 - momentum)  # t + (1 - m)(o - t) = m t + (1 - m) o
            else:
                t.copy_(o)


def byol_momentum(step: int, total: int, base: float = BASE_MOMENTUM) -> float:
    """The EMA momentum at step k of K: ``1 - (1 - base) (cos(pi k / K) + 1) / 2``; base at 0, 1 at K.

    Raises:
        ValueError: when total < 1, step outside [0, total] or base outside [0, 1].
    """
    if total < 1 or not 0 <= step <= total:
        raise ValueError(f"byol_momentum needs 0 <= step <= total and total >= 1, got step {step} of {total}")
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"byol_momentum base must lie in [0, 1], got {base}")
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total) + 1.0) / 2.0
