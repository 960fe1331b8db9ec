"""The only module that touches ``torch.distributed``.

Everything else asks here for its rank, the world size and (for the contrastive
loss) a differentiable all-gather. Outside a process group, ``rank() == 0`` and
``world_size() == 1``, so one code path serves one CPU process and N GPUs.
"""

from __future__ import annotations

import torch.distributed as td


def is_initialized() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if is_initialized() else 0


def world_size() -> int:
    return td.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0
