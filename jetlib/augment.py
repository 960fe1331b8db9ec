"""Batched augmentations for contrastive views, with a fresh random draw per sample, on the device.

Each function takes and returns ``(B, C, H, W)`` images and draws its randomness
with ``torch`` on the images' device, so two views of a batch cost a few batched
kernels and the GPU never waits for per-sample Python transforms. Images stay
non-negative (they are energies) and keep their shape. Geometric transforms act
about the image centre, which is the jet axis.

Presets (chosen by ``--augment``; the report compares them):

``seed``
    What the study describes: random horizontal flip, random crop keeping at
    least 80% of the image (area) resized back to full size, random brightness
    (a per-sample factor in [0.8, 1.2]).
``physics``
    Motivated by jet physics: flips in eta and in phi and 90-degree rotations
    (the detector is symmetric under them, to a good approximation), small
    rotations about the jet axis (+-15 degrees), small translations (+-2 pixels,
    the jet-axis resolution), calorimeter-like smearing of every pixel (10%) and
    dropout of soft pixels (below 5% of the channel's hottest pixel, each with
    probability 0.3). No global energy rescaling: that would teach the encoder to
    ignore jet mass and pT, which the downstream tasks need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PRESETS = ("seed", "physics", "none")


@dataclass(frozen=True)
class AugmentConfig:
    preset: str = "seed"
    crop_min_area: float = 0.8  # seed: smallest crop, as a fraction of the image area
    brightness: float = 0.2  # seed: per-sample factor drawn in [1 - b, 1 + b]
    max_rotation_deg: float = 15.0  # physics: small rotations about the jet axis
    max_shift_px: float = 2.0  # physics: translations, pixels
    smear: float = 0.1  # physics: relative per-pixel smearing
    soft_fraction: float = 0.05  # physics: soft pixel = below this fraction of the channel max
    soft_drop: float = 0.3  # physics: probability a soft pixel is dropped

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"augmentation preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")


def _uniform(b: int, lo: float, hi: float, device) -> torch.Tensor:
    return torch.rand(b, device=device) * (hi - lo) + lo


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample x through per-sample affine maps theta (B, 2, 3) in normalised coordinates."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_min_(0)


def flip_horizontal(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    mask = (torch.rand(x.shape[0], device=x.device) < p).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(-1), x)


def resized_crop(x: torch.Tensor, min_area: float) -> torch.Tensor:
    """A random square crop of area in [min_area, 1], anywhere inside the image, resized back."""
    b = x.shape[0]
    side = _uniform(b, min_area, 1.0, x.device).sqrt()  # crop side / image side
    cx = (torch.rand(b, device=x.device) * 2 - 1) * (1 - side)  # crop centre, normalised, crop stays inside
    cy = (torch.rand(b, device=x.device) * 2 - 1) * (1 - side)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = side, side, cx, cy
    return _warp(x, theta)


def brightness(x: torch.Tensor, amount: float) -> torch.Tensor:
    return x * _uniform(x.shape[0], 1 - amount, 1 + amount, x.device).view(-1, 1, 1, 1)


def symmetric_rotate_shift(x: torch.Tensor, max_deg: float, max_shift_px: float) -> torch.Tensor:
    """Random flips in eta and phi, a random multiple of 90 degrees, a small rotation about the centre
    and a small translation, composed into one affine map per sample and applied in one resampling.

    Flips and quarter turns map pixel centres onto pixel centres: without the small rotation and shift
    they permute pixels, exactly up to float rounding of the sampling grid (~1e-5 relative).
    """
    b, h = x.shape[0], x.shape[-1]
    dev = x.device
    k = torch.randint(0, 4, (b,), device=dev)
    # cos and sin of k quarter turns, exactly 0 and +-1, computed on the device: a table built with
    # torch.tensor([...], device=dev) would be a host-to-device copy (and a stall) per view
    even = k % 2 == 0
    cq = torch.where(even, 1 - k, 0).float()  # k = 0, 1, 2, 3 -> 1, 0, -1, 0
    sq = torch.where(even, 0, 2 - k).float()  # k = 0, 1, 2, 3 -> 0, 1, 0, -1
    quarter = torch.stack([torch.stack([cq, -sq], -1), torch.stack([sq, cq], -1)], -2)  # (B, 2, 2)
    angle = _uniform(b, -max_deg, max_deg, dev) * (math.pi / 180)
    small = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1),
                         torch.stack([angle.sin(), angle.cos()], -1)], -2)
    flip = torch.where(torch.rand(b, 2, device=dev) < 0.5, -1.0, 1.0)  # (B, 2): phi (W), eta (H)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, :, :2] = small @ quarter * flip.unsqueeze(1)  # scales the columns: flips act first
    theta[:, :, 2] = (torch.rand(b, 2, device=dev) * 2 - 1) * (2 * max_shift_px / h)  # pixels -> normalised
    return _warp(x, theta)


def smear_and_drop_soft(x: torch.Tensor, smear: float, soft_fraction: float, soft_drop: float) -> torch.Tensor:
    noise = 1 + smear * torch.randn_like(x)
    peak = x.amax(dim=(-2, -1), keepdim=True)  # (B, C, 1, 1): hottest pixel per sample and channel
    soft = (x > 0) & (x < soft_fraction * peak)
    drop = soft & (torch.rand_like(x) < soft_drop)
    return (x * noise).clamp_min_(0).masked_fill_(drop, 0.0)


def augment(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """One random view of every image in ``x`` (B, C, H, W)."""
    if cfg.preset == "seed":
        x = flip_horizontal(x)
        x = resized_crop(x, cfg.crop_min_area)
        return brightness(x, cfg.brightness)
    if cfg.preset == "physics":
        x = symmetric_rotate_shift(x, cfg.max_rotation_deg, cfg.max_shift_px)
        return smear_and_drop_soft(x, cfg.smear, cfg.soft_fraction, cfg.soft_drop)
    return x


def two_views(x: torch.Tensor, cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair every pretraining method compares: two independent random views of the same batch."""
    return augment(x, cfg), augment(x, cfg)
