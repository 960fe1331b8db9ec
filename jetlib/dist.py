"""The only module that touches ``torch.distributed``.

Everything else asks here for its rank, the world size, a differentiable
all-gather (for the contrastive loss's global negatives) and a few reductions.
Outside a process group ``rank() == 0`` and ``world_size() == 1`` and every
collective is the identity, so one code path serves one CPU process and N GPUs.

The process group comes from the environment ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): NCCL when the
step runs on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as td


def is_initialized() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if is_initialized() else 0


def world_size() -> int:
    return td.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes, if any; returns this rank's device."""
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if launched() and not is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo",
                              device_id=device if device.type == "cuda" else None)
    return device


def cleanup() -> None:
    if is_initialized():
        td.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        td.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a copy); the identity on one process."""
    out = values.detach().clone()
    if is_initialized():
        td.all_reduce(out)
        out /= world_size()
    return out


def all_reduce_min(values: torch.Tensor) -> torch.Tensor:
    out = values.detach().clone()
    if is_initialized():
        td.all_reduce(out, op=td.ReduceOp.MIN)
    return out


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns, to each rank, the gradient of its own slice
    summed over every rank's loss. Without the sum, gradients that other ranks' losses
    send to this rank's embeddings would be dropped (a bug lightly once had)."""

    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(world_size())]
        td.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        g = torch.stack(grads)  # (W, B, D)
        td.all_reduce(g)
        return g[rank()]


def gather(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each rank -> (W * B, ...) in rank order, differentiable. Identity on one process."""
    if not is_initialized() or world_size() == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)
