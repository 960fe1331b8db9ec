"""``jetlib baseline``: the supervised VGG + squeeze-excitation baseline, trained on the same labelled subsets.

As the study trained it: class-weighted binary cross-entropy (``pos_weight`` = gluons /
quarks in the labelled subset, so an unbalanced subset does not bias the classifier),
OneCycleLR over ``epochs``, mixup (Zhang et al. 2018: pairs of jets and their labels
blended with a Beta(alpha, alpha) weight). Every head of the ensemble is trained on
its own loss; predictions average the heads' logits. The best epoch (highest accuracy
on the validation subset of the same label budget, as for fine-tuning) is kept, and
the outputs have the same form (``model.pt``, ``metrics.json``, ``run.json``), so
``jetlib evaluate`` scores it like any other model.

Schedule and stopping: one cycle is a single schedule whose learning rate only comes
down in its final annealing phase, so stopping it early keeps weights trained at a high
learning rate (the study's schedule spanned 50 epochs while patience ended most runs
near the peak). By default (``patience=None``) the whole cycle runs and the best epoch
is picked from all of it; a ``patience`` restores early stopping, for comparison.

The network's task is the one VGG has heads for (``VGG.tasks``, classification): validation and
``jetlib evaluate`` score it with that task's prediction (:mod:`jetlib.tasks`), its training
loss is this module's own (class weights, mixup, one loss per head).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from jetlib import models, tasks
from jetlib.claim import claim
from jetlib.config import resolve
from jetlib.data.loader import NORMALIZE
from jetlib.data.manifest import VALIDATION, Dataset
from jetlib.device import as_input, autocast_for
from jetlib.models.vgg import VGGConfig
from jetlib.schemas import BatchSize, Count, Fraction, LearningRate, Name, Seed, WeightDecay, check, one_of, real
from jetlib.trainer import (
    Stopping,
    classification_scores,
    fit,
    labelled_loaders,
    place,
    prepare,
    resources,
    train_epoch,
    trainable_parameters,
    write_outputs,
)

log = logging.getLogger(__name__)
Validation = one_of(VALIDATION, "validation choices")
Normalize = one_of(NORMALIZE, "loader normalisations")
MixupAlpha = real(ge=0, le=100)  # Beta(alpha, alpha): above 100 it is a fixed 50/50 mix


@dataclass(frozen=True)
class BaselineConfig:
    # Each field's type is its schema (jetlib.schemas): bounds, finiteness, names; checked on construction.
    preset: Name = "gpu"  # the named preset these values started from
    label_fraction: Fraction = 1.0  # one of the dataset's nested train subsets
    seed: Seed = 0  # initialisation, data order, mixup, dropout
    validation: Validation = "fraction"  # fraction: val subset of the same label budget; full: the whole val split
    epochs: Count = 50  # OneCycleLR spans exactly these
    patience: Count | None = None  # None: the whole cycle runs (see the module docstring); N: early stopping
    batch_size: BatchSize = 256
    max_lr: LearningRate = 1e-3  # OneCycleLR peak (AdamW)
    weight_decay: WeightDecay = 1e-4  # AdamW
    mixup_alpha: MixupAlpha = 0.2  # Beta(alpha, alpha) mixing; 0 turns mixup off
    model: VGGConfig = field(default_factory=VGGConfig)
    normalize: Normalize = "scale"  # loader normalisation
    eval_batch_size: BatchSize = 512
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 on CUDA
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on CUDA

    def __post_init__(self):
        check(self)


PRESETS = {
    "tiny": {"epochs": 3, "batch_size": 16, "eval_batch_size": 64,
             "model": VGGConfig(widths=(4, 8, 8, 16), depths=(1, 1, 1, 1), heads=2, head_hidden=16)},
    "cpu": {"epochs": 30, "batch_size": 64,
            "model": VGGConfig(widths=(16, 32, 64, 128), depths=(1, 1, 2, 2), heads=3, head_hidden=64)},
    "gpu": {},
}


def make_config(preset: str = "gpu", **values) -> BaselineConfig:
    return resolve(BaselineConfig(), PRESETS, preset, values)


def baseline(data: str | Dataset, out: str, cfg: BaselineConfig, device: str = "auto") -> dict:
    """Train the VGG baseline on one (label fraction, seed); returns the run record."""
    dev, ds, store = prepare(data, out, device, cfg.seed, "the supervised baseline")
    net = models.create("vgg", **{**cfg.model.to_dict(), "in_channels": ds.image_shape[0]})
    task = tasks.get(net.task)
    model, channels_last = place(net, dev, cfg.channels_last)
    autocast = autocast_for(dev, cfg.amp)
    train, val, labels = labelled_loaders(ds, cfg.label_fraction, cfg.validation, dev, batch_size=cfg.batch_size,
                                          eval_batch_size=cfg.eval_batch_size, seed=cfg.seed,
                                          normalize=cfg.normalize)
    counts = ds.subset(cfg.label_fraction)["class_counts"]
    pos_weight = torch.tensor(counts.get("0", 1) / max(counts.get("1", 1), 1), device=dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay,
                                  fused=dev.type == "cuda")  # one kernel per update, no host step counter
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.max_lr,
                                                    total_steps=max(1, cfg.epochs * len(train)))
    # concentrations on the device, so that each step's mixing weight is drawn there (no host copy per step)
    alpha = torch.tensor(cfg.mixup_alpha, device=dev)
    mix = torch.distributions.Beta(alpha, alpha) if cfg.mixup_alpha > 0 else None
    log.info("VGG baseline on %d labelled jets (fraction %g), seed %d, %d parameters", train.rows,
             cfg.label_fraction, cfg.seed, trainable_parameters(model))

    def step(batch):
        x = batch.x
        y = batch.y.float()
        if mix is not None and len(batch) > 1:
            lam = mix.sample()  # a 0-d tensor on the device
            perm = torch.randperm(len(batch), device=dev)
            x, y = lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
        x = as_input(x, channels_last)
        with autocast():
            logits = model.head.logits(model.forward_features(x)).float()  # (K, B): each head trains on its own
        loss = sum(F.binary_cross_entropy_with_logits(lg, y, pos_weight=pos_weight) for lg in logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler.last_epoch + 1 < scheduler.total_steps:
            scheduler.step()
        return loss

    def one_epoch(epoch: int) -> dict:
        return train_epoch(model, train, epoch, step)

    def validate() -> dict:
        return classification_scores(task.predict(model, val, autocast, None))

    config = asdict(cfg)
    # before the first write, after every check of the input: bad input leaves no claim behind
    claim(store, "baseline", {"config": config, "dataset": ds.manifest["id"]},
          f"VGG, fraction {cfg.label_fraction:g}, seed {cfg.seed}")
    # without patience, stopping never triggers: at most epochs - 1 epochs can go without improvement
    patience = cfg.patience if cfg.patience is not None else cfg.epochs
    result = fit(store, model, optimizer, scheduler, Stopping("val_accuracy", True, patience), cfg.epochs,
                 one_epoch, validate, config, ds.manifest["id"])
    blob = {"arch": net.arch, "config": net.config(), "task": net.task, "head": {}, "mode": "vgg",
            "label_fraction": cfg.label_fraction, "seed": cfg.seed, "normalize": cfg.normalize,
            "dataset": ds.manifest["id"]}
    return write_outputs(store, blob, result, config, {"uri": ds.uri, "id": ds.manifest["id"]},
                         resources(model, dev, train.rows), labels)
