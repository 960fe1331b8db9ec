"""ResNet-15: the study's default jet-image encoder, pretrained by any method (``--encoder resnet``).

A stem convolution and seven residual blocks of two 3x3 convolutions each: 1 + 7 x 2
= 15 weighted layers on the main path (1x1 projection shortcuts, where the width or
stride changes, are not counted, as in He et al. 2016). GroupNorm replaces
BatchNorm: its statistics are per sample, so it behaves the same at a per-GPU batch
of 8 or 256 and needs no synchronisation under DDP. Dropout sits between the two
convolutions of every block (as in wide ResNets), spatial (``Dropout2d``). The width grows block by block
to 512; the embedding is the global average of the last feature map.

Shapes for the default ``gpu`` widths and a 125x125 input::

    stem  3x3/2   (B, 3, 125, 125) -> (B, 32, 63, 63)
    b1 32  /1 -> (B, 32, 63, 63)     b2 64  /2 -> (B, 64, 32, 32)
    b3 128 /2 -> (B, 128, 16, 16)    b4 128 /1 -> (B, 128, 16, 16)
    b5 256 /2 -> (B, 256, 8, 8)      b6 256 /1 -> (B, 256, 8, 8)
    b7 512 /2 -> (B, 512, 4, 4)      pool -> (B, 512)

Heads are separate modules (:mod:`jetlib.models.heads`) that a task puts on the encoder
(:meth:`~jetlib.models.base.Encoder.reset_head`): ``forward_features`` is what pretraining,
fine-tuning and the k-NN monitor all share. The named widths of the presets are :data:`VARIANTS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from jetlib.errors import ConfigError
from jetlib.models.base import Encoder
from jetlib.models.registry import register_model
from jetlib.schemas import Channels, Dropout, Groups, Stride, Strides, Width, Widths, check


@dataclass(frozen=True)
class ResNetConfig:
    # Each field's type is its schema (jetlib.schemas), checked on construction: a config read back
    # from a blob passes it before anything is built.
    in_channels: Channels = 3  # image channels (3: Tracks/ECAL/HCAL; 8 for the 8-channel layout)
    stem_width: Width = 32  # channels after the stem convolution
    stem_stride: Stride = 2  # the stem halves 125x125 to 63x63: the first blocks would cost 4x more
    widths: Widths = (32, 64, 128, 128, 256, 256, 512)  # output channels per block
    strides: Strides = (1, 2, 2, 1, 2, 1, 2)  # stride of each block's first convolution
    groups: Groups = 8  # GroupNorm groups (capped by the width)
    dropout: Dropout = 0.1  # spatial dropout between the two convolutions of each block

    def __post_init__(self):
        check(self, "model.")
        if len(self.widths) != len(self.strides):
            raise ConfigError(f"model: widths and strides need one entry per block, got {len(self.widths)} "
                              f"widths and {len(self.strides)} strides")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ResNetConfig:
        return cls(**d)  # the schema turns the lists JSON gives into tuples


def _norm(groups: int, width: int) -> nn.GroupNorm:
    g = min(groups, width)
    while width % g:
        g -= 1
    return nn.GroupNorm(g, width)


class ResidualBlock(nn.Module):
    """conv3x3(stride) - GN - ReLU - dropout2d - conv3x3 - GN, plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(groups, c_out)
        # spatial dropout: whole feature maps, since neighbouring pixels are correlated (Tompson et al.
        # 2015); it also draws B*C random numbers instead of B*C*H*W, 17% of a CPU step at 63x63
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(groups, c_out)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(groups, c_out))

    def forward(self, x):
        out = self.drop(self.act(self.norm1(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(Encoder):
    """The encoder: ``forward_features`` (B, C, H, W) -> (B, num_features); ``forward`` adds the head."""

    first_conv = "stem.0.weight"

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.stem_width, 3, cfg.stem_stride, 1, bias=False),
            _norm(cfg.groups, cfg.stem_width),
            nn.ReLU(inplace=True),
        )
        blocks, c = [], cfg.stem_width
        for width, stride in zip(cfg.widths, cfg.strides, strict=True):
            blocks.append(ResidualBlock(c, width, stride, cfg.groups, cfg.dropout))
            c = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # No zero-init of each block's last norm (Goyal et al. 2017): on ~98%-empty jet images it left
        # every jet with nearly the same embedding and SimCLR's loss at chance for ~50 steps longer.

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, C_last, h, w)
        return self.pool(x).flatten(1)  # (B, C_last)

    def config(self) -> dict:
        return self.cfg.to_dict()

    def stages(self) -> dict[str, nn.Module]:
        return {"stem": self.stem, **{f"block{i + 1}": b for i, b in enumerate(self.blocks)}}

    def weighted_layers(self) -> int:
        """Convolutions on the main path (the "15" of ResNet-15)."""
        return 1 + 2 * len(self.blocks)


# The presets' widths (tiny: tests, cpu: a laptop, gpu: the study), named once for every step.
VARIANTS = {
    "tiny": ResNetConfig(stem_width=4, widths=(4, 4, 8, 8, 8, 8, 16), groups=2, dropout=0.1),
    "cpu": ResNetConfig(stem_width=16, widths=(16, 16, 32, 32, 64, 64, 128), groups=8, dropout=0.1),  # 405k params
    "gpu": ResNetConfig(),
}


def resnet15(**overrides) -> ResNet:
    """ResNet-15 with the study's widths, or any :class:`ResNetConfig` field overridden."""
    return ResNet(ResNetConfig(**overrides))


@register_model("resnet", variants=VARIANTS, config=ResNetConfig)
def resnet(**cfg) -> ResNet:
    """The registered factory: :class:`ResNetConfig` fields (lists or tuples), defaults for the rest."""
    return ResNet(ResNetConfig.from_dict({**ResNetConfig().to_dict(), **cfg}))
