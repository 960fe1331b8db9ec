"""Heads that sit on an encoder's features. The SimCLR projector is one of them."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """SimCLR projector g(h): Linear - ReLU - Linear, features -> ``out_dim`` (128).

    The contrastive loss is computed on its output; downstream tasks use the
    features before it, which keep more information (Chen et al. 2020, sec. 4.2).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, h):  # (B, in_dim) -> (B, out_dim)
        return self.net(h)


class ClassifierHead(nn.Module):
    """Quark/gluon head: a small feed-forward network with dropout 0.3 (the study), features -> 2 logits."""

    def __init__(self, in_dim: int, hidden_dim: int = 256, n_classes: int = 2, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, n_classes))

    def forward(self, h):  # (B, in_dim) -> (B, n_classes)
        return self.net(h)


class _ResidualMLP(nn.Module):
    """x + Linear(ReLU(Linear(LayerNorm(x)))): a pre-norm residual block."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(dim, dim))

    def forward(self, x):
        return x + self.net(x)


class RegressionHead(nn.Module):
    """Jet-mass regressor: residual MLP blocks with deep supervision.

    Every block has its own linear output, so the forward pass returns one prediction
    per depth, ``(depth, B)``; training adds the losses of all of them (the auxiliary
    ones keep gradients flowing into the early blocks), and the last one is the
    prediction that is reported.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, depth: int = 3, dropout: float = 0.1):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList(_ResidualMLP(hidden_dim, dropout) for _ in range(depth))
        self.outs = nn.ModuleList(nn.Linear(hidden_dim, 1) for _ in range(depth))

    def forward(self, h):  # (B, in_dim) -> (depth, B)
        x = self.inp(h)
        preds = []
        for block, out in zip(self.blocks, self.outs, strict=True):
            x = block(x)
            preds.append(out(x).squeeze(-1))
        return torch.stack(preds)
