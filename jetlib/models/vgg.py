"""The supervised baseline: a VGG-style network with squeeze-and-excitation and an ensemble of heads.

Stacked 3x3 convolutions (Simonyan & Zisserman 2015) with BatchNorm, a
squeeze-and-excitation block closing every stage (Hu et al. 2018: the channels are
re-weighted by a gate computed from their global averages), max-pooling between
stages, and several independent classifier heads whose logits are averaged: a cheap
ensemble. Trained fully supervised (:mod:`jetlib.baseline`), it is what self-supervised
pretraining has to beat.

Shapes for the default widths and a 125x125 input::

    stage 1: 2 x conv 32,  SE, pool -> (B, 32, 62, 62)
    stage 2: 2 x conv 64,  SE, pool -> (B, 64, 31, 31)
    stage 3: 3 x conv 128, SE, pool -> (B, 128, 15, 15)
    stage 4: 3 x conv 256, SE, pool -> (B, 256, 7, 7)
    global average -> (B, 256) -> K heads -> mean logit (B,) -> two-class logits (B, 2)

The ensemble is the network's head (:class:`HeadEnsemble`), and the network is a binary classifier
only: ``tasks = ("cls",)`` (:meth:`~jetlib.models.base.Encoder.reset_head` refuses any other task).
Its output is written as the two-class logits ``[0, mean logit]``, whose softmax gives the quark
probability ``sigmoid(mean logit)`` and whose cross-entropy equals the binary cross-entropy of the
mean logit, so the classification task scores it like every other classifier.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from jetlib.errors import ConfigError
from jetlib.models.base import Encoder
from jetlib.models.registry import register_model
from jetlib.schemas import Channels, Depths, Dropout, Width, Widths, check, whole

Heads = whole(1, 64)  # an ensemble of more heads than that averages nothing new


@dataclass(frozen=True)
class VGGConfig:
    # Each field's type is its schema (jetlib.schemas), checked on construction.
    in_channels: Channels = 3  # image channels
    widths: Widths = (32, 64, 128, 256)  # channels per stage
    depths: Depths = (2, 2, 3, 3)  # 3x3 convolutions per stage
    se_reduction: Width = 8  # squeeze-and-excitation bottleneck ratio
    heads: Heads = 3  # classifier heads in the ensemble
    head_hidden: Width = 128  # hidden width of each head
    dropout: Dropout = 0.3  # before each head's output layer

    def __post_init__(self):
        check(self, "model.")
        if len(self.widths) != len(self.depths):
            raise ConfigError(f"model: widths and depths need one entry per stage, got {len(self.widths)} "
                              f"widths and {len(self.depths)} depths")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VGGConfig:
        return cls(**d)  # the schema turns the lists JSON gives into tuples


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x):  # (B, C, H, W): channels scaled by a gate in (0, 1)
        return x * self.gate(x)


class HeadEnsemble(nn.Module):
    """K independent classifier heads; ``logits`` (K, B) for training each, ``forward`` (B, 2) for predicting."""

    def __init__(self, in_dim: int, heads: int, hidden: int, dropout: float):
        super().__init__()
        self.members = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                          nn.Linear(hidden, 1))
            for _ in range(heads))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(h).squeeze(-1) for m in self.members])  # (K, B)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mean = self.logits(h).mean(0)  # (B,): the ensemble's logit, quark = 1
        return torch.stack([torch.zeros_like(mean), mean], 1)  # (B, 2): softmax[:, 1] = sigmoid(mean)


class VGG(Encoder):
    """``forward`` gives two-class logits per jet, ``[0, mean of the heads' logits]`` (quark = class 1)."""

    tasks = ("cls",)  # the ensemble is a quark/gluon classifier: no other task has a VGG head

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
        self.head = self.make_head(self.tasks[0])
        self.task = self.tasks[0]

    def make_head(self, task: str, **head_cfg) -> HeadEnsemble:
        """The ensemble, sized by the config (``heads``, ``head_hidden``, ``dropout`` may be overridden)."""
        cfg = self.cfg
        return HeadEnsemble(self.num_features, head_cfg.get("heads", cfg.heads),
                            head_cfg.get("hidden", cfg.head_hidden), head_cfg.get("dropout", cfg.dropout))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)  # (B, C_last)

    def config(self) -> dict:
        return self.cfg.to_dict()


@register_model("vgg", config=VGGConfig)
def vgg(**cfg) -> VGG:
    """The registered factory: :class:`VGGConfig` fields (lists or tuples), defaults for the rest."""
    return VGG(VGGConfig.from_dict({**VGGConfig().to_dict(), **cfg}))
