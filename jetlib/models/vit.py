"""A small vision transformer for 125x125 jet images: the second encoder the study can pretrain.

The image is cut into non-overlapping ``patch`` x ``patch`` squares (5: a 25x25 grid of 625 tokens
for 125x125, which the ResNet's stride-2 stem sees at 63x63), each embedded linearly, given a
fixed 2-D sine-cosine position (MAE, He et al. 2021: no parameters, so the same weights take any
image size), and passed through ``depth`` pre-norm transformer blocks (Dosovitskiy et al. 2021).
The features are the mean of the output tokens after a final LayerNorm: no class token, which the
mean matches in accuracy (Zhai et al. 2022) and which a self-supervised loss would otherwise
have to train from nothing.

Shapes for the ``gpu`` widths and a 125x125 input::

    patch 5x5/5   (B, 3, 125, 125) -> (B, 192, 25, 25) -> tokens (B, 625, 192)
    6 blocks      (B, 625, 192) -> (B, 625, 192)
    norm, mean    -> (B, 192)

Most of a jet image is zero: a patch with no hit embeds to the patch projection's bias alone, and
attention lets the few patches with energy reach each other in one layer, where the ResNet needs
its depth to cover the jet's radius.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from jetlib.errors import ConfigError
from jetlib.models.base import Encoder
from jetlib.models.registry import register_model
from jetlib.schemas import Channels, Dropout, Stride, Width, check, whole

Heads = whole(1, 64)
Depth = whole(1, 64)
Patch = whole(1, 64)


@dataclass(frozen=True)
class ViTConfig:
    # Each field's type is its schema (jetlib.schemas), checked on construction.
    in_channels: Channels = 3  # image channels
    patch: Patch = 5  # patch side in pixels: 125 = 25 x 5
    dim: Width = 192  # token width (divisible by 4 for the 2-D sine-cosine positions, and by heads)
    depth: Depth = 6  # transformer blocks
    heads: Heads = 3  # attention heads per block
    mlp_ratio: Stride = 4  # the MLP's hidden width, in multiples of dim
    dropout: Dropout = 0.1  # after attention and in the MLP

    def __post_init__(self):
        check(self, "model.")
        if self.dim % 4 or self.dim % self.heads:
            raise ConfigError(f"model: dim {self.dim} must be divisible by 4 and by heads {self.heads}")

    def to_dict(self) -> dict:
        return asdict(self)


def sincos_positions(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (MAE's ``get_2d_sincos_pos_embed``): (h * w, dim).

    Half the channels encode the row, half the column, each as sines and cosines of geometric frequencies.
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    out = []
    for grid in (rows.flatten(), cols.flatten()):
        angles = grid[:, None] * omega[None, :]  # (h*w, dim/4)
        out += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(out, dim=1).float()  # (h*w, dim)


class ViT(Encoder):
    """The encoder: ``forward_features`` (B, C, H, W) -> (B, dim); ``forward`` adds the head."""

    first_conv = "patch_embed.weight"

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(cfg.in_channels, cfg.dim, cfg.patch, cfg.patch)  # a linear map per patch
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.dim * cfg.mlp_ratio, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # the nested-tensor fast path is for padded batches; every jet has all its tokens
        self.blocks = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.num_features = cfg.dim
        nn.init.trunc_normal_(self.patch_embed.weight, std=math.sqrt(1 / (cfg.in_channels * cfg.patch ** 2)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, D, h, w)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, D)
        x = x + sincos_positions(h, w, self.cfg.dim).to(x.device, x.dtype)
        x = self.norm(self.blocks(x))  # (B, h*w, D)
        return x.mean(dim=1)  # (B, D)

    def config(self) -> dict:
        return self.cfg.to_dict()

    def stages(self) -> dict[str, nn.Module]:
        return {"patch_embed": self.patch_embed, **{f"block{i + 1}": b for i, b in enumerate(self.blocks.layers)}}


# The presets' sizes: tiny for tests, cpu for a laptop, gpu for the study (ViT-Tiny's width and heads, 6 blocks).
VARIANTS = {
    "tiny": ViTConfig(dim=16, depth=1, heads=2, mlp_ratio=2),
    "cpu": ViTConfig(dim=64, depth=4, heads=4, mlp_ratio=2),
    "gpu": ViTConfig(),
}


@register_model("vit", variants=VARIANTS, config=ViTConfig)
def vit(**cfg) -> ViT:
    """The registered factory: :class:`ViTConfig` fields, defaults for the rest."""
    return ViT(ViTConfig(**{**ViTConfig().to_dict(), **cfg}))
