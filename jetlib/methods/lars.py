"""LARS (You, Gitman and Ginsburg 2017, "Large Batch Training of Convolutional Networks"): SGD with momentum
whose step on each weight matrix is scaled by the trust ratio ``eta * ||w|| / (||g|| + wd * ||w||)``.

The optimiser of the BYOL, Barlow Twins and VICReg papers' recipes, run here as solo-learn runs it on
CIFAR (``solo/utils/lars.py``, from Lightning Bolts; ``scripts/pretrain/cifar/*.yaml``: ``eta: 0.02``,
``clip_lr: True``, ``exclude_bias_n_norm: True``, SGD momentum 0.9): the trust ratio is divided by the
learning rate and clipped at 1, so LARS never steps further than plain SGD would; parameters of one
dimension (norms, biases, a learned temperature) take plain SGD with no weight decay, as
:meth:`jetlib.methods.base.Method.param_groups` puts them in the group without decay.
"""

from __future__ import annotations

import torch

ETA, MOMENTUM = 0.02, 0.9  # solo-learn's CIFAR configs (eta) and its LARS default (SGD momentum)


class LARS(torch.optim.Optimizer):
    """LARS over ``params`` (parameter groups as for AdamW; each group's ``weight_decay`` is its L2 term)."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = MOMENTUM,
                 eta: float = ETA, eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "eta": eta,
                                  "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:  # matrices, kernels: L2 term, trust ratio (clipped at 1); a zero
                    # weight or gradient leaves the plain gradient, as solo-learn (the ratio is undefined there)
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    ratio = group["eta"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                    scaled = d.add(p, alpha=wd).mul_(torch.clamp(ratio / lr, max=1.0))
                    d = torch.where((w_norm > 0) & (g_norm > 0), scaled, d)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d.detach().clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(state["momentum_buffer"], alpha=-lr)
        return loss
