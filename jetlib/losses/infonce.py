"""InfoNCE / NT-Xent, the SimCLR loss, with a learnable temperature and global negatives.

For a batch of N jets seen in two views, every embedding's positive is the other
view of its jet and its negatives are the other 2N - 2 embeddings (Chen et al.
2020, eq. 1). Under DDP the N is the *global* batch: embeddings are gathered from
every rank with :func:`jetlib.dist.gather`, whose backward sends each rank the
gradients of its own embeddings from all ranks' losses, so N processes compute
the same loss and gradients as one process on the whole batch.

The temperature is learned, parametrised as ``log(1/T)`` and clamped to
``[min_temperature, max_temperature]`` as CLIP does (Radford et al. 2021), starting
at 0.07.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from jetlib import dist


class InfoNCELoss(nn.Module):
    def __init__(self, temperature: float = 0.07, learnable: bool = True, min_temperature: float = 0.01,
                 max_temperature: float = 1.0, gather_distributed: bool = True):
        super().__init__()
        if not min_temperature <= temperature <= max_temperature:
            raise ValueError("initial temperature must lie within its clamp range")
        log_scale = torch.tensor(math.log(1.0 / temperature))
        self.log_scale = nn.Parameter(log_scale) if learnable else nn.Buffer(log_scale)
        self.bounds = (math.log(1.0 / max_temperature), math.log(1.0 / min_temperature))
        self.gather_distributed = gather_distributed

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(*self.bounds).exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.scale.detach())

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Mean loss over the 2B local embeddings. z1, z2: (B, D), the two views of B jets.

        Computed in fp32 even inside a bf16 autocast region: at T = 0.01 the logits reach
        100, where bf16's 8-bit mantissa rounds them by ~0.4 and the loss moves by ~1e-2."""
        with torch.autocast(z1.device.type, enabled=False):
            return self._loss(z1, z2)

    def _loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        z1 = F.normalize(z1.float(), dim=1)
        z2 = F.normalize(z2.float(), dim=1)
        b = z1.shape[0]
        if self.gather_distributed and dist.world_size() > 1:
            all1, all2 = dist.gather(z1), dist.gather(z2)  # (N, D) each, N = W * B
            offset = dist.rank() * b
        else:
            all1, all2, offset = z1, z2, 0
        n = all1.shape[0]
        scale = self.scale
        idx = torch.arange(b, device=z1.device) + offset  # global index of each local jet
        self_mask = F.one_hot(idx, n).bool()  # (B, N): an embedding is not its own negative
        # rows: local view-1 embeddings against [all view-2 | all view-1]; the positive is column idx
        # mask after scaling: -inf * scale would send NaN into the temperature's gradient
        logits1 = torch.cat([z1 @ all2.T, z1 @ all1.T], dim=1) * scale
        logits2 = torch.cat([z2 @ all1.T, z2 @ all2.T], dim=1) * scale
        mask = torch.cat([torch.zeros_like(self_mask), self_mask], dim=1)
        logits1, logits2 = logits1.masked_fill(mask, -torch.inf), logits2.masked_fill(mask, -torch.inf)
        return 0.5 * (F.cross_entropy(logits1, idx) + F.cross_entropy(logits2, idx))
