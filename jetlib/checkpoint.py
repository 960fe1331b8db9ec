"""Checkpoints in the store: written atomically, verified by sha256 when read, resumable.

A training step writes ``<out>/checkpoints/epoch-NNNN.pt`` and then the pointer
``<out>/checkpoints/latest.json`` (epoch, key, sha256, bytes); older checkpoint files
are deleted after the pointer moves, unless kept with ``keep_every``. A kill at any
moment leaves a pointer to a whole, verifiable checkpoint. Only the main rank
writes; every rank reads.

A checkpoint holds what resuming bit-for-bit needs: the unwrapped model, the
optimizer, the step and epoch, every RNG state (Python, NumPy, torch CPU and CUDA)
and the resolved config, which must match the config of the run that resumes it.
"""

from __future__ import annotations

import io
import json
import random

import numpy as np
import torch

from jetlib.data.store import Store, sha256_bytes
from jetlib.errors import DataError, StoreError

POINTER = "latest.json"


def to_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_object(store: Store, key: str, obj) -> dict:
    """torch.save ``obj`` to ``key``; returns ``{"key", "sha256", "bytes"}``."""
    data = to_bytes(obj)
    sha = sha256_bytes(data)
    store.put_bytes(key, data, sha256=sha)
    return {"key": key, "sha256": sha, "bytes": len(data)}


def load_object(store: Store, key: str, sha256: str | None = None, map_location="cpu"):
    """Load ``key`` (written by :func:`save_object`), verifying ``sha256`` when given."""
    data = store.get_bytes(key)
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise DataError(f"{store.key_uri(key)}: checksum mismatch (corrupt or replaced checkpoint)")
    # Our own files, from our own store: they hold NumPy RNG state, which weights_only refuses.
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Fixed seeds for Python, NumPy and PyTorch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Checkpoints:
    """The ``checkpoints/`` folder of one run."""

    def __init__(self, store: Store, keep_every: int = 0):
        self.store = store
        self.keep_every = keep_every

    def save(self, state: dict, epoch: int) -> dict:
        record = save_object(self.store, f"epoch-{epoch:04d}.pt", state)
        previous = self.pointer()
        self.store.put_bytes(POINTER, json.dumps({"epoch": epoch, **record}).encode())
        if previous and previous["key"] != record["key"]:
            kept = self.keep_every and previous["epoch"] % self.keep_every == 0
            if not kept:
                self.store.delete_prefix(previous["key"])
        return record

    def pointer(self) -> dict | None:
        try:
            return json.loads(self.store.get_bytes(POINTER))
        except StoreError as e:
            if "does not exist" in str(e):
                return None
            raise

    def latest(self, map_location="cpu") -> dict | None:
        """The newest checkpoint, verified, or None when the run has not saved one."""
        ptr = self.pointer()
        if ptr is None:
            return None
        return load_object(self.store, ptr["key"], ptr["sha256"], map_location)
