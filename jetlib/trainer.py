"""The epoch loop the supervised steps share: validation, early stopping, the best checkpoint, resume.

``jetlib finetune`` and ``jetlib baseline`` differ in their model, loss and schedule,
which they pass in as ``train_epoch`` / ``validate`` callables; what happens around
them is here, once:

* after every epoch the validation metrics decide whether this is the best epoch so
  far (its weights are kept) and whether patience has run out;
* every epoch is checkpointed (model, optimizer, scheduler, RNG, history, best weights,
  patience counter); re-running the same command resumes and ends where an
  uninterrupted run would;
* at the end ``model.pt`` (the best weights), ``metrics.json`` and ``run.json`` (last,
  with ``model.pt``'s sha256) are written.
"""

from __future__ import annotations

import copy
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from jetlib import records
from jetlib.checkpoint import Checkpoints, resume, rng_states, save_object, seed_everything
from jetlib.data.loader import Batch, JetLoader
from jetlib.data.manifest import Dataset, open_dataset
from jetlib.data.store import Store, open_store
from jetlib.device import channels_last_for, setup_device
from jetlib.errors import ConfigError
from jetlib.metrics import roc_auc
from jetlib.progress import progress
from jetlib.schemas import Count, Name, check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stopping:
    monitor: Name  # validation key that picks the best epoch, e.g. "val_accuracy"
    higher_is_better: bool  # accuracy-like (True) or loss-like (False)
    patience: Count  # epochs without improvement before stopping

    def __post_init__(self):
        check(self, "stopping.")

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best


@dataclass
class FitResult:
    history: list[dict]
    best_state: dict
    best_epoch: int
    best_value: float
    stopped_early: bool
    train_seconds: float
    train_jets: int


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA; peak resident memory of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB


def prepare(data, out: str, device: str, seed: int, step: str):
    """(device, labelled dataset, writable output store) for a supervised step, with every seed set."""
    dev = setup_device(device)
    ds = data if isinstance(data, Dataset) else open_dataset(data)
    if not ds.labelled:
        raise ConfigError(f"{ds.uri} has no labels: {step} needs a labelled dataset")
    store = open_store(out)
    store.check_writable()
    seed_everything(seed)
    return dev, ds, store


def place(model: nn.Module, dev: torch.device, channels_last: str) -> tuple[nn.Module, bool]:
    """Move ``model`` to ``dev`` (channels_last when asked: see :mod:`jetlib.device`); resets the peak-memory
    gauge. Returns (model, whether inputs go channels_last: :func:`jetlib.device.as_input`)."""
    on = channels_last_for(channels_last)
    model = model.to(dev)
    if on:
        model = model.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    return model, on


def labelled_loaders(ds: Dataset, fraction: float, validation: str, dev: torch.device, *, batch_size: int,
                     eval_batch_size: int, seed: int, normalize: str) -> tuple[JetLoader, JetLoader, dict]:
    """(train loader, val loader, ``labels`` record) for a supervised run on the label fraction ``fraction``.

    The val loader holds the validation subset of the same label budget unless ``validation``
    is ``"full"`` (see :meth:`Dataset.validation_fraction`); ``labels`` says how many labelled
    jets each side used: ``{"train_jets", "val_jets", "validation"}``."""
    val_fraction, used = ds.validation_fraction(fraction, validation)
    train = JetLoader(ds, "train", fraction=fraction, batch_size=batch_size, device=dev, shuffle=True,
                      drop_last=False, seed=seed, normalize=normalize)
    val = JetLoader(ds, "val", fraction=val_fraction, batch_size=eval_batch_size, device=dev, shuffle=False,
                    normalize=normalize)
    return train, val, {"train_jets": train.rows, "val_jets": val.rows, "validation": used}


def resources(model: nn.Module, dev: torch.device, train_jets: int) -> dict:
    return {"trainable_parameters": trainable_parameters(model),
            "total_parameters": sum(p.numel() for p in model.parameters()),
            "peak_memory_mb": peak_memory_mb(dev), "device": str(dev), "train_jets": train_jets}


def train_epoch(model: nn.Module, loader: JetLoader, epoch: int,
                step: Callable[[Batch], torch.Tensor]) -> dict:
    """One training epoch with a progress bar; ``step(batch)`` computes, back-propagates and applies
    one batch's loss and returns it (the step puts its input in the model's layout with
    :func:`jetlib.device.as_input`, after any augmentation). Returns the jet-weighted mean loss
    and the jets seen.

    The loss is summed on the device and read back once, at the end of the epoch: an
    ``.item()`` per step would make the host wait for the GPU every step."""
    model.train()
    loader.set_epoch(epoch)
    total, n = torch.zeros((), dtype=torch.float64, device=loader.device), 0
    for batch in progress(loader, total=len(loader), desc=f"epoch {epoch}", unit="batch", leave=False):
        loss = step(batch)
        total += loss.detach().double() * len(batch)
        n += len(batch)
    return {"train_loss": float(total) / max(n, 1), "jets": n}  # the epoch's one read-back


def predict(model: nn.Module, loader: JetLoader, autocast,
            score: Callable[[torch.Tensor, Batch], tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """The model's outputs over a whole split, in loader order, without gradients.

    ``score(out, batch)`` turns the network's raw output on one batch into (mean loss, per-jet
    values, shape (B,)): quark probabilities, or masses in GeV. Returns ``{"out", "y", "m0",
    "jet"}`` as (N,) NumPy arrays and ``"loss"``, the jet-weighted mean loss.

    Everything stays on the device until the split is done, then comes back in one copy per
    array: a per-batch ``.item()`` or ``.cpu()`` is a device sync that stalls the GPU."""
    model.eval()
    outs, ys, ms, jets, n = [], [], [], [], 0
    total = torch.zeros((), dtype=torch.float64, device=loader.device)
    with torch.no_grad():
        for batch in loader:
            with autocast():
                out = model(batch.x)
            loss, values = score(out, batch)
            total += loss.detach().double() * len(batch)
            n += len(batch)
            outs.append(values.float())
            ys.append(batch.y)
            ms.append(batch.m0)
            jets.append(batch.jet)
    host = lambda parts: torch.cat(parts).cpu().numpy()  # noqa: E731 - one copy per array
    return {"out": host(outs), "y": host(ys), "m0": host(ms), "jet": host(jets), "loss": float(total) / max(n, 1)}


def classification_scores(pred: dict) -> dict:
    """Validation loss, accuracy at 0.5 and AUC from ``{"loss", "out" (probabilities), "y"}``."""
    return {"val_loss": pred["loss"], "val_accuracy": float(((pred["out"] >= 0.5) == pred["y"]).mean()),
            "val_auc": roc_auc(pred["y"], pred["out"])}


def fit(store: Store, model: nn.Module, optimizer, scheduler, stopping: Stopping, epochs: int,
        train_epoch: Callable[[int], dict], validate: Callable[[], dict], config: dict, dataset_id: str,
        after_validation: Callable[[dict], None] | None = None) -> FitResult:
    """Train up to ``epochs``; ``train_epoch(epoch)`` returns stats including ``jets``."""
    ckpts = Checkpoints(store.child("checkpoints"))
    history, start, best_state, best_epoch, best_value, bad, seconds, jets = [], 0, None, -1, None, 0, 0.0, 0
    saved = resume(ckpts, config=config, dataset_id=dataset_id, model=model, optimizer=optimizer,
                   scheduler=scheduler)
    if saved is not None:
        history, start = saved["history"], saved["epoch"] + 1
        best_state, best_epoch, best_value, bad = (saved["best_state"], saved["best_epoch"], saved["best_value"],
                                                   saved["bad_epochs"])
        seconds, jets = saved["train_seconds"], saved["train_jets"]
    stopped = bad >= stopping.patience
    for epoch in range(start, epochs):
        if stopped:
            break
        t0 = time.perf_counter()
        stats = train_epoch(epoch)
        seconds += time.perf_counter() - t0
        jets += stats.get("jets", 0)
        val = validate()
        if after_validation is not None:
            after_validation(val)
        value = val[stopping.monitor]
        improved = stopping.better(value, best_value)
        if improved:
            best_state, best_epoch, best_value, bad = copy.deepcopy(model.state_dict()), epoch, value, 0
        else:
            bad += 1
        stopped = bad >= stopping.patience
        row = {"epoch": epoch, **stats, **val, "lr": optimizer.param_groups[0]["lr"], "best": improved}
        history.append(row)
        ckpts.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None, "epoch": epoch,
                    "rng": rng_states(), "history": history, "best_state": best_state, "best_epoch": best_epoch,
                    "best_value": best_value, "bad_epochs": bad, "config": config, "dataset": dataset_id,
                    "train_seconds": seconds, "train_jets": jets}, epoch)
        log.info("epoch %d: %s%s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                     if isinstance(v, float)), " *" if improved else "")
    return FitResult(history, best_state, best_epoch, best_value, stopped, seconds, jets)


def write_outputs(store: Store, blob: dict, result: FitResult, config: dict, dataset: dict,
                  resources: dict, labels: dict | None = None) -> dict:
    """``model.pt`` (best weights), ``metrics.json``, then ``run.json``; returns run.json's content.

    ``labels`` (from :func:`labelled_loaders`) is recorded in both JSON files, and run.json
    carries the provenance (:func:`jetlib.records.write_run` adds it)."""
    record = save_object(store, "model.pt", {**blob, "state_dict": result.best_state})
    training = {"best_epoch": result.best_epoch, "best_value": result.best_value,
                "epochs_run": len(result.history), "stopped_early": result.stopped_early,
                "train_seconds": result.train_seconds,
                "train_jets_per_s": result.train_jets / max(result.train_seconds, 1e-9)}
    records.write_json(store, "metrics.json", {"config": config, "dataset": dataset, "labels": labels,
                                               "training": training, "epochs": result.history})
    run = records.write_run(store, records.MODEL, {
        "model": record, "arch": blob["arch"], "task": blob["task"], "mode": blob["mode"],
        "label_fraction": blob["label_fraction"], "seed": blob["seed"], "dataset": dataset, "labels": labels,
        "training": training, "resources": resources, "config": config}, resources.get("device"))
    return run
