"""Checkpoints and finished runs in the store: written atomically, verified by sha256, loaded without code.

A training step writes ``<out>/checkpoints/epoch-NNNN.pt`` and then the pointer
``<out>/checkpoints/latest.json`` (epoch, key, sha256, bytes); older checkpoint files
are deleted after the pointer moves, unless kept with ``keep_every``. A kill at any
moment leaves a pointer to a whole, verifiable checkpoint. Only the main rank
writes; every rank reads.

A checkpoint holds what resuming bit-for-bit needs: the unwrapped model, the
optimizer (and scheduler), the step and epoch, *every rank's* RNG states (Python,
NumPy, torch CPU and CUDA: restoring rank 0's state on every rank would make all
ranks draw the same augmentations) and the resolved config, which must match the
config of the run that resumes it. :func:`resume` is the one place that reads it back,
for pretraining and the supervised steps alike.

Nothing executable is read back: every object is loaded with
``torch.load(weights_only=True)``, so everything saved is tensors, plain containers,
strings and numbers (RNG states included). A file that needs more is refused, since a
sha256 stored in the same bucket proves nothing about who wrote it.

Nothing read back chooses a path either: the pointer's key must be an
``epoch-NNNN.pt`` directly in ``checkpoints/`` and ``run.json``'s artifact key a plain
``<name>.pt`` in the run's folder, each with a well-formed sha256, or they are refused
before anything is read or deleted (a crafted pointer once deleted another run's checkpoint).
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import random
import re

import numpy as np
import torch

from jetlib import dist
from jetlib.data.keys import check_sha256, confine
from jetlib.data.store import NotFound, Store, sha256_bytes
from jetlib.errors import ConfigError, DataError

log = logging.getLogger(__name__)
POINTER = "latest.json"
CHECKPOINT_NAME = re.compile(r"epoch-\d{4,9}\.pt")
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\.pt")


def to_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_object(store: Store, key: str, obj) -> dict:
    """torch.save ``obj`` (tensors and plain data only) to ``key``; returns ``{"key", "sha256", "bytes"}``."""
    data = to_bytes(obj)
    sha = sha256_bytes(data)
    store.put_bytes(key, data, sha256=sha)
    return {"key": key, "sha256": sha, "bytes": len(data)}


def load_object(store: Store, key: str, sha256: str | None = None, map_location="cpu"):
    """Load ``key`` (written by :func:`save_object`), verifying ``sha256`` when given.

    Raises:
        StoreError: the object cannot be read (exit 3).
        DataError: checksum mismatch, or the file holds anything but tensors and plain data (exit 2).
    """
    data = store.get_bytes(key)
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise DataError(f"{store.key_uri(key)}: checksum mismatch (corrupt or replaced checkpoint)")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise DataError(f"{store.key_uri(key)}: refused to load, it holds more than tensors and plain data "
                        f"({_unpickler_reason(str(e))})") from None
    except (RuntimeError, EOFError) as e:  # truncated or not a torch file at all
        raise DataError(f"{store.key_uri(key)}: not a readable torch file ({type(e).__name__})") from None


def _unpickler_reason(message: str) -> str:
    """The one useful phrase of torch's weights_only refusal (which also advises loading it anyway)."""
    match = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global|\.\s|$)", message)
    return match.group(1).strip()[:200] if match else "not a weights-only file"


def rng_state() -> dict:
    """This process's RNG states as tensors and plain data (loadable with ``weights_only=True``)."""
    version, keys, gauss = random.getstate()
    kind, mt, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(keys), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(mt.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        # this rank's own GPU only: every visible GPU's state would make a resume with fewer
        # GPUs visible per process raise, and no other device's generator is this rank's to restore
        "cuda": [torch.cuda.get_rng_state(torch.cuda.current_device())] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`; its tensors may have been loaded onto a GPU (``map_location``)."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())  # RNG states are CPU byte tensors, whatever the device
    if state["cuda"] and torch.cuda.is_available():
        # one entry: this rank's GPU. Older checkpoints hold one per visible GPU, in device order: the
        # entry of the GPU this process uses now is the one it advanced
        saved, here = state["cuda"], torch.cuda.current_device()
        own = saved[0] if len(saved) == 1 else saved[here] if here < len(saved) else None
        if own is None:
            log.warning("the checkpoint holds no RNG state for cuda:%d; its generator starts afresh", here)
        else:
            torch.cuda.set_rng_state(own.cpu(), here)


def rng_states() -> list[dict]:
    """Every rank's :func:`rng_state`, in rank order. A collective: call it on every rank."""
    return dist.all_gather_object(rng_state())


def seed_everything(seed: int) -> None:
    """Fixed seeds for Python, NumPy and PyTorch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resume(ckpts: Checkpoints, *, config: dict, dataset_id: str, model, optimizer, scheduler=None,
           map_location="cpu") -> dict | None:
    """Restore the newest checkpoint into ``model``/``optimizer``/``scheduler`` and this rank's RNG.

    The one resume of every training step: it refuses a checkpoint written with another
    config or dataset, and restores the RNG state this rank saved (the checkpoint holds one
    per rank, see :func:`rng_states`).

    Returns:
        the checkpoint (for the step's own counters: epoch, step, history, ...) or ``None``
        when the run has not saved one yet.
    """
    saved = ckpts.latest(map_location=map_location)
    if saved is None:
        return None
    where = ckpts.store.uri.removesuffix("/checkpoints")
    if saved["config"] != config or saved["dataset"] != dataset_id:
        diff = [k for k in config if saved["config"].get(k) != config[k]]
        what = f"settings {', '.join(diff)}" if diff else "dataset"
        raise ConfigError(f"{where} holds a run with different {what}: resume with the same command, "
                          f"or choose a new --out")
    world, rank = dist.world_size(), dist.rank()
    if len(saved["rng"]) != world:
        raise ConfigError(f"{where} was checkpointed by {len(saved['rng'])} processes, not {world}: resume "
                          f"with the same number of processes, or choose a new --out")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"][rank])
    log.info("resuming %s after epoch %d", where, saved["epoch"])
    return saved


class Checkpoints:
    """The ``checkpoints/`` folder of one run."""

    def __init__(self, store: Store, keep_every: int = 0):
        self.store = store
        self.keep_every = keep_every

    def save(self, state: dict, epoch: int) -> dict:
        record = save_object(self.store, f"epoch-{epoch:04d}.pt", state)
        previous = self.pointer()
        self.store.put_bytes(POINTER, json.dumps({"epoch": epoch, **record}, allow_nan=False).encode())
        if previous and previous["key"] != record["key"]:
            kept = self.keep_every and previous["epoch"] % self.keep_every == 0
            if not kept:
                self.store.delete_prefix(previous["key"])
        return record

    def pointer(self) -> dict | None:
        """``latest.json``, checked: its key an ``epoch-NNNN.pt`` here, its sha256 and epoch well formed."""
        try:
            raw = self.store.get_bytes(POINTER)
        except NotFound:
            return None
        where = self.store.key_uri(POINTER)
        try:
            ptr = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise DataError(f"{where}: not JSON (a corrupt or foreign checkpoint pointer: refused)") from None
        epoch = ptr.get("epoch") if isinstance(ptr, dict) else None
        if not isinstance(ptr, dict) or isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise DataError(f"{where}: not a checkpoint pointer (epoch, key, sha256): refused")
        confine(ptr.get("key"), where, name=CHECKPOINT_NAME)
        check_sha256(ptr.get("sha256"), where)
        return ptr

    def latest(self, map_location="cpu") -> dict | None:
        """The newest checkpoint, verified, or None when the run has not saved one."""
        ptr = self.pointer()
        if ptr is None:
            return None
        return load_object(self.store, ptr["key"], ptr["sha256"], map_location)
