"""Heads that sit on an encoder's features. The SimCLR projector is one of them."""

from __future__ import annotations

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
