"""``jetlib pretrain``: self-supervised pretraining of an encoder, one CPU process to many GPUs.

The encoder (``--encoder``, ``encoder`` in the config: the ResNet-15 by default) is any network in
the models registry (:data:`jetlib.models.ARCHS`), built by :func:`jetlib.models.create` for the
dataset's channels; its constructor arguments are ``model`` in the config (its config dataclass,
:func:`jetlib.models.config_class`): the preset's size (:func:`jetlib.models.variant`), then
``--set model.NAME=VALUE``, checked against the network's own arguments when the config is made
(:func:`jetlib.models.step_model`). ``encoder.pt`` records its ``arch`` and ``config``, so
fine-tuning, evaluation and the report rebuild it by name.

The method (``--method``, ``method`` in the config: SimCLR by default) is an object from
:mod:`jetlib.methods`: the loop below feeds it two views per batch and steps the optimiser on the
loss it returns; the method owns its heads, loss, parameter groups and per-step hook (BYOL's EMA).

The same command runs alone or under ``torchrun --nproc_per_node N -m jetlib pretrain``
(DDP: NCCL on GPU, gloo on CPU). Labels are never read for training; they only feed
the k-NN monitor when the dataset has them.

Outputs in ``--out`` (a store URI), main rank only:

``checkpoints/``  every epoch (see :mod:`jetlib.checkpoint`); a re-run of the same
                  command resumes from the newest and ends bit-for-bit where an
                  uninterrupted run would (on CPU)
``metrics.json``  per epoch: loss, learning rate, jets/s, the method's own numbers (SimCLR's
                  temperature, BYOL's EMA momentum), k-NN accuracy, ``embedding``
                  (:func:`jetlib.monitor.embedding_stats` of the encoder on ``monitor_val``
                  validation jets: std, effective rank, collapsed), and
                  ``step_losses``: ``[[global_step, loss], ...]`` every ``log_interval`` steps
                  (the loss of the global batch, averaged over ranks)
``encoder.pt``    the encoder's weights and config, for fine-tuning
``run.json``      written last (:func:`jetlib.records.write_run`): the encoder's sha256, the
                  resolved config (augmentation parameters included), ``method`` (name and
                  resolved params), ``collapse`` when the final epoch's embedding collapsed
                  (also a warning), and the provenance (git commit, packages)
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from jetlib import dist, methods, models, records
from jetlib.augment import PRESETS as AUGMENT_PRESETS
from jetlib.augment import AugmentConfig, two_views
from jetlib.checkpoint import Checkpoints, resume, rng_states, save_object, seed_everything
from jetlib.claim import claim
from jetlib.config import override, resolve
from jetlib.data.loader import MODES as LOADER_MODES
from jetlib.data.loader import NORMALIZE, JetLoader
from jetlib.data.manifest import Dataset, open_dataset
from jetlib.data.store import open_store
from jetlib.device import as_input, autocast_for, channels_last_for, cpu_amp, prepare_compile, setup_device
from jetlib.errors import ConfigError, ResourceError, TrainingError, out_of_memory_line
from jetlib.methods.base import Method, make_optimizer
from jetlib.models.resnet import ResNetConfig
from jetlib.monitor import embedding_stats, knn_accuracy
from jetlib.progress import progress
from jetlib.schemas import BatchSize, Count, LearningRate, Name, NonNegCount, Seed, WeightDecay, check, one_of, parse

log = logging.getLogger(__name__)
Augment = one_of(AUGMENT_PRESETS, "augmentation presets")
Normalize = one_of(NORMALIZE, "loader normalisations")
LoaderMode = one_of(LOADER_MODES, "loader modes")
Arch = one_of(lambda: models.ARCHS, "registered networks")


@dataclass(frozen=True)
class PretrainConfig:
    # Each field's type is its schema (jetlib.schemas): bounds, finiteness, names; checked on construction.
    preset: Name = "gpu"  # the named preset these values started from
    epochs: Count = 100
    batch_size: BatchSize = 256  # global batch: split evenly over the ranks (at least 2: a contrastive pair)
    lr: LearningRate = 1e-3  # peak learning rate (per lr_batch jets of the global batch when lr_batch is set)
    weight_decay: WeightDecay = 1e-4  # on weights only (not norms, biases, temperature)
    # These defaults are SimCLR's recipe; another method's own (its class's ``recipe``) replaces them.
    optimizer: Literal["adamw", "lars"] = "adamw"  # jetlib.methods.base.make_optimizer
    lr_batch: NonNegCount = 0  # 0: lr as given; N: lr per N jets, scaled linearly to batch_size (peak_lr)
    warmup_epochs: NonNegCount = 10  # linear warmup, then cosine decay to zero (per step)
    method: Name = methods.DEFAULT_METHOD  # the pretraining method: a name in jetlib.methods.METHODS
    # the method's hyperparameters over its own defaults (its Params dataclass, in its file), checked by it
    method_params: dict = field(default_factory=dict)
    augment: Augment = "seed"  # augmentation preset: seed | physics
    encoder: Arch = "resnet"  # the network pretrained: a name in jetlib.models.ARCHS
    # the encoder's constructor arguments: an instance of its config (jetlib.models.config_class), set
    # field by field as model.NAME; make_config starts it from the encoder's size for the preset
    model: Any = field(default_factory=ResNetConfig)
    seed: Seed = 0  # seeds init, augmentations (offset per rank) and the data order
    normalize: Normalize = "scale"  # loader normalisation
    max_steps_per_epoch: NonNegCount = 0  # 0 = the whole train split each epoch
    monitor_bank: NonNegCount = 2000  # k-NN monitor: labelled train jets in the bank
    monitor_val: NonNegCount = 1000  # validation jets the k-NN and collapse monitors score
    knn_k: Count = 20  # neighbours the k-NN monitor votes with
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | off
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto (= off until measured: see jetlib.device) | on | off
    compile: bool = False  # torch.compile the model
    keep_every: NonNegCount = 0  # also keep every Nth epoch's checkpoint (0: only the newest)
    log_interval: Count = 10  # read the loss back (a device sync) and record it every N steps
    # auto | resident | stream: see jetlib.data.loader (the batches are the same)
    loader: LoaderMode = "auto"

    def __post_init__(self):
        check(self)
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2 (a contrastive pair), got {self.batch_size}")
        methods.params(self.method, self.method_params)  # an unknown method or parameter fails here, not later
        object.__setattr__(self, "model", models.model_config(self.encoder, self.model))  # the encoder's own config


# The encoder's size per preset is its own (jetlib.models.variant: the ResNet's named widths), not a field here.
PRESETS = {
    # seconds on tiny generated data, yet two epochs so that resuming is exercised
    "tiny": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1,
             # applied to the default method first, then to the chosen one: keep them valid for SimCLR
             "method_params": {"proj_hidden": 16, "proj_dim": 8},
             "monitor_bank": 64, "monitor_val": 32, "knn_k": 5, "log_interval": 1},
    # a laptop run in minutes: the encoder's cpu size (a ResNet-15 of 405k parameters)
    # 5 epochs; bf16 autocast where the CPU has native bf16 (half the CPU per step): docs/speed.md
    "cpu": {"epochs": 5, "batch_size": 64, "warmup_epochs": 1, "amp": cpu_amp(),
            "method_params": {"proj_hidden": 256}, "monitor_bank": 1000, "monitor_val": 500},
    # the full study
    "gpu": {},
}


def make_config(preset: str = "gpu", recipe: dict | None = None, **values) -> PretrainConfig:
    """The config of a pretraining, from five sources, lowest first: the defaults (SimCLR's recipe),
    the method's own recipe, the preset, a tuned ``recipe``, then ``values`` (flags and ``--set``).

    The method's recipe (its class's ``recipe``: optimiser, learning rate and its batch scaling,
    weight decay, warmup) replaces the defaults; whatever the preset, a ``recipe``
    (:func:`jetlib.tune.recipe.read_recipe`: ``{"method": ..., "values": {...}}``) or the user sets
    wins over it, in that order. Two fields are gathered before the rest are set: the method's
    hyperparameters (:func:`_method_params`) and the encoder's size (:func:`jetlib.models.step_model`:
    its preset variant, then ``model.NAME`` values, checked against the network's arguments).
    """
    recipe = recipe or {}
    method = (values.get("method") or recipe.get("method") or PRESETS.get(preset, {}).get("method")
              or PretrainConfig.method)
    if recipe and recipe.get("method", method) != method:
        raise ConfigError(f"the recipe is {str(recipe['method'])[:40]}'s, not {str(method)[:40]}'s: tune {method}")
    tuned = dict(recipe.get("values", {}))
    tuned_params = tuned.pop("method_params", None) or {}
    values = {**tuned, "method": method, **values}  # the user's values over the recipe's
    params, values = _method_params(method, preset, tuned_params, values)
    encoder = parse(Arch, values.get("encoder") or PretrainConfig.encoder, "encoder")  # before it sizes anything
    model, values = models.step_model(encoder, preset, values)
    values = {**values, "encoder": encoder, "model": model, "method_params": params}
    base = override(PretrainConfig(), dict(methods.get(method).recipe))
    return resolve(base, PRESETS, preset, values)


def _method_params(method: str, preset: str, tuned: dict, values: dict) -> tuple[dict, dict]:
    """(the method's parameters, the other values): the preset's parameters that the method has (the
    tiny preset's small projector), then a tuned recipe's, then the user's, checked by the method's ``Params``.

    The user gives one as ``method_params`` (a dict), ``method_params.NAME`` or, when no config field
    has that name, ``NAME`` (``--set temperature=0.1``); each must exist.
    """
    known = {f.name for f in fields(methods.get(method).Params)}
    mine = {f.name for f in fields(PretrainConfig)}
    merged = {k: v for k, v in PRESETS.get(preset, {}).get("method_params", {}).items() if k in known}
    merged.update(tuned)
    given = values.get("method_params") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"method_params {given!r}: set each one as --set method_params.NAME=VALUE")
    merged.update(given)
    rest = {}
    for key, value in values.items():
        name = key.removeprefix("method_params.")
        if name != key or (key not in mine and key in known):
            merged[name] = value
        elif key != "method_params":
            rest[key] = value
    checked = methods.params(method, merged)  # typed: "0.1" from --set is recorded as 0.1
    return {k: getattr(checked, k) for k in merged}, rest


def peak_lr(cfg: PretrainConfig) -> float:
    """The schedule's peak: ``lr``, or ``lr * batch_size / lr_batch`` (the linear scaling rule of Goyal et al.
    2017 that the LARS recipes state their rates in, per 256 jets)."""
    return cfg.lr * cfg.batch_size / cfg.lr_batch if cfg.lr_batch else cfg.lr


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))


def lr_schedule(total: int, warmup: int, peak: float) -> np.ndarray:
    """The learning rate of every step, computed once (DINO's ``cosine_scheduler``) and indexed by the loop."""
    return np.array([lr_at(s, total, warmup, peak) for s in range(total)], dtype=np.float64)


def train_one_epoch(model: nn.Module, loader: JetLoader, optimizer, cfg: PretrainConfig, step: int,
                    schedule: np.ndarray, steps: int, autocast, channels_last: bool,
                    epoch: int) -> tuple[dict, int]:
    """One pass of the method ``model`` (maybe DDP-wrapped or compiled); returns (averaged stats, next step).

    ``schedule`` holds every step's learning rate (:func:`lr_schedule`). After each optimiser step
    the method's :meth:`~jetlib.methods.base.Method.after_step` runs (BYOL's target update). The loss is
    read back to the host (a device sync) only every ``cfg.log_interval`` steps and at the last
    step, as nanoGPT does; the finiteness check rides on the same read. A non-finite loss seen
    there stops the run before this epoch's checkpoint is written.
    """
    method = _unwrap(model)
    total_steps = len(schedule)
    aug = AugmentConfig(cfg.augment)
    model.train()
    losses = torch.zeros((), device=loader.device)
    step_losses = []  # [[global step, loss of the global batch], ...]
    t0 = time.perf_counter()
    bar = progress(total=steps, desc=f"epoch {epoch}", unit="step", disable=not dist.is_main())
    n = 0
    for batch in loader:
        if n == steps:
            break
        lr = float(schedule[step])
        for group in optimizer.param_groups:
            group["lr"] = lr
        v1, v2 = two_views(batch.x, aug)  # (B, C, H, W) each, fp32, NCHW (grid_sample's output)
        v1, v2 = as_input(v1, channels_last), as_input(v2, channels_last)  # the layout change after it, once
        with autocast():
            loss = model(v1, v2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step(step, total_steps)
        losses += loss.detach()
        n += 1
        if n % cfg.log_interval == 0 or n == steps:
            value = float(dist.all_reduce_mean(loss.detach().float()))  # same on every rank: all stop together
            if not math.isfinite(value):
                raise TrainingError(f"non-finite loss ({value}) at epoch {epoch}, step {step}: lower --lr or "
                                    f"check the data; the newest checkpoint is still good")
            step_losses.append([step, value])
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
        step += 1
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    mean_loss = dist.all_reduce_mean(losses / n)
    return {"loss": float(mean_loss), "lr": lr, "steps": n, "seconds": seconds,
            "jets_per_s": n * loader.batch_size * dist.world_size() / seconds, "step_losses": step_losses}, step


def _unwrap(model: nn.Module) -> Method:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def pretrain(data: str | Dataset, out: str, cfg: PretrainConfig, device: str = "auto") -> dict:
    """Run (or resume) pretraining; returns the final epoch's metrics."""
    dev = setup_device(device, distributed=True)
    if cfg.compile:  # before anything is written: caches in a writable folder, or one line on what is missing
        prepare_compile(dev)
    try:
        return _pretrain(data, out, cfg, dev)
    except MemoryError as e:  # a model or schedule the address space cannot hold: the machine, not the input
        raise ResourceError(out_of_memory_line(e)) from None
    finally:
        dist.cleanup()


def _pretrain(data, out, cfg: PretrainConfig, device: torch.device) -> dict:
    """Every check of the input, then the claim, the resume, the epochs and the outputs, in that order."""
    ds = data if isinstance(data, Dataset) else open_dataset(data)
    world, rank = dist.world_size(), dist.rank()
    if cfg.batch_size % world:
        raise ConfigError(f"global batch {cfg.batch_size} does not split evenly over {world} ranks")
    store = open_store(out)
    if dist.is_main():
        store.check_writable()
    ckpts = Checkpoints(store.child("checkpoints"), cfg.keep_every)
    model, channels_last = _build_method(cfg, ds, device)
    # fused: one kernel for the whole update on CUDA (nanoGPT); the CPU path stays the reference
    optimizer = make_optimizer(model, cfg.optimizer, peak_lr(cfg), cfg.weight_decay, fused=device.type == "cuda")
    loader = JetLoader(ds, "train", batch_size=cfg.batch_size // world, device=device, seed=cfg.seed,
                       normalize=cfg.normalize, mode=cfg.loader)
    steps = len(loader) if not cfg.max_steps_per_epoch else min(len(loader), cfg.max_steps_per_epoch)
    if steps == 0:
        raise ConfigError(f"batch size {cfg.batch_size} is larger than the train split ({loader.rows} jets)")
    schedule = lr_schedule(cfg.epochs * steps, cfg.warmup_epochs * steps, peak_lr(cfg))

    history, start, step = [], 0, 0
    if dist.is_main():  # before the first write, after every check of the input: bad input leaves no claim
        claim(store, "pretrain", {"config": asdict(cfg), "dataset": ds.manifest["id"]}, f"seed {cfg.seed}")
    saved = resume(ckpts, config=asdict(cfg), dataset_id=ds.manifest["id"], model=model, optimizer=optimizer,
                   map_location=device)
    if saved is not None:
        history, start, step = saved["history"], saved["epoch"] + 1, saved["step"]
    else:
        torch.manual_seed(cfg.seed + 1_000_003 * rank)  # augmentations differ across ranks
    if dist.is_main():
        n_params = sum(p.numel() for p in _unwrap(model).encoder.parameters())
        log.info("pretraining %s %s with %s (%d encoder parameters) on %s x %d, %d jets, %d steps/epoch, augment=%s",
                 cfg.preset, cfg.encoder, cfg.method, n_params, device, world, loader.rows, steps, cfg.augment)

    model, net = _distribute(model, cfg, device, world)
    autocast = autocast_for(device, cfg.amp)
    bank, val = _monitor_loaders(ds, cfg, device) if dist.is_main() else (None, None)
    for epoch in range(start, cfg.epochs):
        loader.set_epoch(epoch)
        stats, step = train_one_epoch(net, loader, optimizer, cfg, step, schedule, steps, autocast,
                                      channels_last, epoch)
        stats = {"epoch": epoch, **stats, **_unwrap(model).stats(), **_monitor(model, bank, val, cfg, autocast)}
        history.append(stats)
        rngs = rng_states()  # every rank's, after the monitor: what the next epoch starts from
        if dist.is_main():
            ckpts.save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch, "step": step, "rng": rngs, "config": asdict(cfg),
                        "dataset": ds.manifest["id"], "history": history}, epoch)
            _write_metrics(store, cfg, ds, history)
            extra = "".join(f", {k} {v:.4g}" for k, v in _unwrap(model).stats().items())
            log.info("epoch %d: loss %.4f, lr %.2e, %.0f jets/s%s%s", epoch, stats["loss"], stats["lr"],
                     stats["jets_per_s"], extra,
                     f", k-NN acc {stats['knn_accuracy']:.3f}" if "knn_accuracy" in stats else "")
        dist.barrier()

    final = _summary(history[-1]) if history else {}
    if dist.is_main():
        _finish(store, cfg, ds, _unwrap(model), history, device)
    dist.barrier()
    return final


def _build_method(cfg: PretrainConfig, ds: Dataset, device: torch.device) -> tuple[Method, bool]:
    """(the method around the encoder ``cfg.encoder`` built for the dataset's channels, channels-last or not)."""
    encoder_args = {**asdict(cfg.model), "in_channels": ds.image_shape[0]}  # its size as configured
    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = methods.create(cfg.method, models.create(cfg.encoder, **encoder_args), cfg.method_params).to(device)
    # Off unless asked for: GroupNorm on CUDA returns NCHW (see jetlib.device), and on CPU oneDNN's AVX2 1x1
    # weight-gradient kernel (the stride-2 shortcuts) can spin forever in channels_last with torch 2.14.1.
    channels_last = channels_last_for(cfg.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, channels_last


def _distribute(model: Method, cfg: PretrainConfig, device: torch.device, world: int) -> tuple[nn.Module, ...]:
    """(the model whose weights are saved, the module the loop calls: DDP-wrapped and/or compiled)."""
    net = model
    if world > 1:
        if device.type == "cuda":  # a projector's BatchNorm normalises the global batch (no CPU SyncBatchNorm)
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return model, net


def _monitor_loaders(ds: Dataset, cfg: PretrainConfig, device: torch.device):
    """(k-NN bank, validation jets) for the main rank's monitors, each None when off.

    Streamed: they read only the first ``monitor_bank`` / ``monitor_val`` jets, not a second resident copy.
    """
    knn = ds.labelled and cfg.monitor_bank > 0
    opts = {"batch_size": 256, "device": device, "shuffle": False, "normalize": cfg.normalize, "rank": 0,
            "world_size": 1, "mode": "stream"}
    bank = JetLoader(ds, "train", **opts) if knn else None
    val = JetLoader(ds, "val", **opts) if knn or cfg.monitor_val > 1 else None  # collapse needs no labels
    return bank, val


def _monitor(model, bank, val, cfg: PretrainConfig, autocast) -> dict:
    """The epoch's k-NN accuracy and embedding stats on the main rank (empty elsewhere or when off)."""
    stats = {}
    if bank is not None:
        stats["knn_accuracy"] = knn_accuracy(_unwrap(model).encoder, bank, val, cfg.monitor_bank, cfg.monitor_val,
                                             cfg.knn_k, autocast)
    if val is not None and cfg.monitor_val > 1:
        stats["embedding"] = _embedding_stats(_unwrap(model).encoder, val, cfg.monitor_val, autocast)
    return stats


@torch.no_grad()
def _embedding_stats(encoder: nn.Module, val: JetLoader, max_jets: int, autocast) -> dict | None:
    """:func:`jetlib.monitor.embedding_stats` of the encoder's features on the first ``max_jets`` validation
    jets (no labels needed); None when the split holds fewer than two."""
    was_training, feats, n = encoder.training, [], 0
    encoder.eval()
    for batch in val:
        with autocast():
            feats.append(encoder.forward_features(batch.x).float())
        n += len(batch)
        if n >= max_jets:
            break
    encoder.train(was_training)
    h = torch.cat(feats)[:max_jets] if feats else torch.empty(0, 0)
    return embedding_stats(h) if len(h) >= 2 else None


def _collapse(history: list[dict]) -> dict | None:
    """The final epoch's embedding stats when they say the embedding collapsed, else None."""
    emb = history[-1].get("embedding") if history else None
    return {"epoch": history[-1]["epoch"], **emb} if emb and emb["collapsed"] else None


def _write_metrics(store, cfg, ds, history) -> None:
    doc = {"step": "pretrain", "config": asdict(cfg), "augment_params": asdict(AugmentConfig(cfg.augment)),
           "dataset": {"uri": ds.uri, "id": ds.manifest["id"]}, "epochs": history}
    records.write_json(store, "metrics.json", doc)


def _summary(stats: dict) -> dict:
    """An epoch's stats without the per-step losses (those stay in metrics.json)."""
    return {k: v for k, v in stats.items() if k != "step_losses"}


def _finish(store, cfg, ds, model: Method, history, device) -> None:
    encoder = {"arch": cfg.encoder, "config": model.encoder.config(), "state_dict": model.encoder.state_dict(),
               "normalize": cfg.normalize, "channel_names": ds.manifest["image"]["channel_names"],
               "dataset": ds.manifest["id"], "pretrain": asdict(cfg)}
    record = save_object(store, "encoder.pt", encoder)
    _write_metrics(store, cfg, ds, history)
    collapse = _collapse(history)
    if collapse:
        log.warning("the %s embedding collapsed by epoch %d (std %.3g, effective rank %.3g of %d): the encoder "
                    "is written, but it is unlikely to help fine-tuning", cfg.method, collapse["epoch"],
                    collapse["std_mean"], collapse["effective_rank"], model.encoder.num_features)
    records.write_run(store, records.PRETRAIN, {
        "dataset": {"uri": ds.uri, "id": ds.manifest["id"]}, "encoder": record,
        "final": _summary(history[-1]) if history else {}, "config": asdict(cfg),
        "method": {"name": cfg.method, "params": asdict(model.params)},
        "augment_params": asdict(AugmentConfig(cfg.augment)), "world_size": dist.world_size(),
        "torch": torch.__version__, "host": os.uname().nodename, **({"collapse": collapse} if collapse else {})},
        device)
    log.info("encoder written to %s", store.key_uri("encoder.pt"))
