"""The supervised baseline: a VGG-style network with squeeze-and-excitation and an ensemble of heads.

Stacked 3x3 convolutions (Simonyan & Zisserman 2015) with BatchNorm, a
squeeze-and-excitation block closing every stage (Hu et al. 2018: the channels are
re-weighted by a gate computed from their global averages), max-pooling between
stages, and several independent classifier heads whose logits are averaged: a cheap
ensemble. Trained fully supervised (:mod:`jetlib.baseline`), it is what SimCLR
pretraining has to beat.

Shapes for the default widths and a 125x125 input::

    stage 1: 2 x conv 32,  SE, pool -> (B, 32, 62, 62)
    stage 2: 2 x conv 64,  SE, pool -> (B, 64, 31, 31)
    stage 3: 3 x conv 128, SE, pool -> (B, 128, 15, 15)
    stage 4: 3 x conv 256, SE, pool -> (B, 256, 7, 7)
    global average -> (B, 256) -> K heads -> mean logit (B,)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class VGGConfig:
    in_channels: int = 3
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels per stage
    depths: tuple[int, ...] = (2, 2, 3, 3)  # 3x3 convolutions per stage
    se_reduction: int = 8  # squeeze-and-excitation bottleneck ratio
    heads: int = 3  # classifier heads in the ensemble
    head_hidden: int = 128
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VGGConfig:
        return cls(**{**d, "widths": tuple(d["widths"]), "depths": tuple(d["depths"])})


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x):  # (B, C, H, W): channels scaled by a gate in (0, 1)
        return x * self.gate(x)


class VGG(nn.Module):
    """``forward`` gives one logit per jet (quark = 1), the mean of the heads' logits."""

    def __init__(self, cfg: VGGConfig):
        super().__init__()
        self.cfg = cfg
        layers, c = [], cfg.in_channels
        for width, depth in zip(cfg.widths, cfg.depths, strict=True):
            for _ in range(depth):
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c = width
            layers += [SqueezeExcite(c, cfg.se_reduction), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(c, cfg.head_hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout),
                          nn.Linear(cfg.head_hidden, 1))
            for _ in range(cfg.heads))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)  # (B, C_last)

    def forward_heads(self, h: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(h).squeeze(-1) for head in self.heads])  # (K, B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_heads(self.forward_features(x)).mean(0)  # (B,)
