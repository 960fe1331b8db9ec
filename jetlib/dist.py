"""The only module that touches ``torch.distributed``.

Everything else asks here for its rank, the world size, a differentiable
all-gather (for the contrastive loss's global negatives) and a few reductions.
Outside a process group ``rank() == 0`` and ``world_size() == 1`` and every
collective is the identity, so one code path serves one CPU process and N GPUs.

The process group comes from the environment ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): NCCL when the
step runs on CUDA, gloo on CPU. Collectives time out after ``JETLIB_DIST_TIMEOUT_S``
seconds (default 1800), so a dead peer ends the survivors with an error instead of a
hang that holds the GPUs forever.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as td

from jetlib.errors import ConfigError
from jetlib.schemas.env import dist_env


def is_initialized() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if is_initialized() else 0


def world_size() -> int:
    return td.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return dist_env().LOCAL_RANK


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return dist_env().WORLD_SIZE > 1


DEFAULT_TIMEOUT_S = 1800


def timeout() -> datetime.timedelta:
    """How long a collective waits for the other ranks: ``JETLIB_DIST_TIMEOUT_S`` (default 1800 s)."""
    raw = os.environ.get("JETLIB_DIST_TIMEOUT_S", str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"JETLIB_DIST_TIMEOUT_S must be a positive number of seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def rank_gpu(local: int, visible: int, local_world: int) -> int:
    """The GPU index of local rank ``local`` among ``visible`` GPUs, ``local_world`` ranks on this node.

    torchrun's convention is one process per GPU, all GPUs visible: GPU ``LOCAL_RANK``. A launcher
    that gives each process only its own GPU (``CUDA_VISIBLE_DEVICES`` per rank) leaves one visible:
    GPU 0. Fewer GPUs than ranks otherwise would put two ranks on one GPU, which NCCL refuses
    mid-run; that is refused here, in one line, before the process group forms."""
    if visible == 1:
        return 0
    if local < visible:
        return local
    raise ConfigError(f"local rank {local} of {local_world} on this node, but only {visible} GPU(s) are visible: "
                      f"start one process per GPU (torchrun --nproc_per_node {visible})")


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes, if any; returns this rank's device (:func:`rank_gpu`)."""
    if device.type == "cuda":
        device = torch.device("cuda", rank_gpu(local_rank(), torch.cuda.device_count(),
                                               dist_env().LOCAL_WORLD_SIZE or 1))
        torch.cuda.set_device(device)
    if launched() and not is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout(),
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


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects); ``[obj]`` on one process."""
    if not is_initialized():
        return [obj]
    out = [None] * world_size()
    td.all_gather_object(out, obj)
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
