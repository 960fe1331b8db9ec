"""The base class of every pretraining method (see :mod:`jetlib.methods`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NoParams:
    """The hyperparameters of a method that has none."""


class Method(nn.Module):
    """Encoder + heads + loss. Subclasses set :attr:`Params` and implement :meth:`forward`.

    Attributes:
        encoder: the network that fine-tuning starts from (``forward_features(x) -> (B, F)``).
        Params: the method's hyperparameter dataclass (frozen; every field has a default); none by default.
    """

    Params: type = NoParams
    name: str = ""
    # The method's training recipe: PretrainConfig values (optimizer, lr, lr_batch, weight_decay,
    # warmup_epochs) applied over the config's defaults and under a preset, a recipe file and the
    # user's flags (jetlib.pretrain.make_config). Empty: the defaults, which are SimCLR's recipe.
    recipe: dict = {}
    # What `jetlib tune` holds fixed in every trial (method parameters), so that what it searches means what
    # it says (SimCLR: a fixed temperature, since a learned one would undo the search).
    tune_fixed: dict = {}

    @classmethod
    def search_space(cls, params) -> dict[str, tuple[float, float, bool]]:
        """The method parameters `jetlib tune` searches besides the learning rate and weight decay:
        ``{name: (low, high, log)}``, around ``params`` (the method's resolved :attr:`Params`). None by
        default: a method without its own search tunes the optimiser alone."""
        return {}

    def __init__(self, encoder: nn.Module, params):
        super().__init__()
        self.encoder = encoder
        self.params = params

    def forward(self, v1, v2):  # pragma: no cover - abstract
        """Two augmented views (B, C, H, W) of the same jets -> the scalar loss of the (global) batch."""
        raise NotImplementedError

    def features(self, v1, v2):
        """The encoder's features of both views, (B, F) each, from one pass over the 2B jets (the encoder's
        GroupNorm is per jet, so one pass equals two)."""
        h = self.encoder.forward_features(torch.cat([v1, v2]))
        return h[: v1.shape[0]], h[v1.shape[0]:]

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step (``step`` counts from 0): EMA updates and the like. No-op."""

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups, as nanoGPT's ``configure_optimizers``: matrices and kernels decay; norms, biases
        and scalars (a learned temperature) do not. Parameters that take no gradient (a momentum target
        network) are left out of the optimiser."""
        decay, no_decay = [], []
        for _name, p in self.named_parameters():
            if p.requires_grad:
                (decay if p.ndim > 1 else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def stats(self) -> dict:
        """Extra numbers for this epoch's record (e.g. SimCLR's learned temperature)."""
        return {}


def make_optimizer(method: Method, name: str, lr: float, weight_decay: float,
                   fused: bool = False) -> torch.optim.Optimizer:
    """The optimiser a recipe names over ``method``'s :meth:`~Method.param_groups`: ``adamw`` (``fused``: one
    CUDA kernel for the whole update, as nanoGPT) or ``lars`` (:class:`jetlib.methods.lars.LARS`)."""
    groups = method.param_groups(weight_decay)
    if name == "lars":
        from jetlib.methods.lars import LARS

        return LARS(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def mlp(dims: list[int], *, last_norm: bool = False) -> nn.Sequential:
    """Linear - BatchNorm1d - ReLU for every layer but the last, which is a plain Linear (BatchNorm after it
    too when ``last_norm``): the projector and predictor of VICReg, Barlow Twins and BYOL.

    Under DDP on GPUs :func:`jetlib.pretrain.pretrain` converts the BatchNorms to SyncBatchNorm (global-batch
    statistics, as the VICReg and Barlow Twins authors' training scripts do); torch has no CPU SyncBatchNorm, so a
    multi-process CPU run normalises each rank's batch on its own.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=False)):
        last = i == len(dims) - 2
        norm = not last or last_norm
        layers.append(nn.Linear(a, b, bias=not norm))  # a bias before a BatchNorm is cancelled by it
        if norm:
            layers.append(nn.BatchNorm1d(b))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
