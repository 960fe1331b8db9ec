"""Which device a step runs on, and whether it runs under bf16 autocast."""

from __future__ import annotations

import contextlib
import re

import torch

from jetlib.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; refuses CUDA without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}, but no GPU is visible to PyTorch")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}, but PyTorch sees {torch.cuda.device_count()} GPU(s)")
    return torch.device(name)


def autocast_for(device: torch.device, amp: str):
    """A context-manager factory: bf16 autocast for ``amp=bf16``, or ``auto`` on CUDA; otherwise a no-op."""
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
