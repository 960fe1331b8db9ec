"""``jetlib finetune``: quark/gluon classification and jet-mass regression on a pretrained (or not) encoder.

Modes, all on the same labelled subset (``--label-fraction``) and the same validation
subset, so that they compare fairly:

``finetune``  encoder initialised from a pretraining run (``--init``), trained end to end
``linear``    the same encoder frozen; only the head trains (a linear-probe-style readout)
``scratch``   the same network and hyperparameters from a random initialisation

Tasks (hyperparameters of the study):

``cls``  :class:`~jetlib.models.heads.ClassifierHead` (dropout 0.3), cross-entropy, Adam lr 5e-4,
         ReduceLROnPlateau (factor 0.5, patience 5) on validation accuracy; the best epoch
         is the one with the highest validation accuracy
``reg``  :class:`~jetlib.models.heads.RegressionHead` (residual blocks, deep supervision), Huber
         (SmoothL1) loss summed over depths on the mass normalised with train-split
         statistics, AdamW lr 1e-3, CosineAnnealingWarmRestarts (T0 = 10, T_mult = 2), gradient
         clipping at 1.0; the best epoch has the lowest validation MAE in GeV

Up to ``epochs`` (50) with early stopping after ``patience`` (10) epochs without
improvement. The best epoch and the learning-rate steps are chosen on the validation
subset of the same label budget (``validation="fraction"``, see
:mod:`jetlib.data.splits`), so a 1% run uses only 1% of the labels (with a floor per
class); ``validation="full"`` uses the whole val split. Every run records how many
labelled jets each side used (``labels`` in ``run.json``). Writes ``model.pt`` (best
weights), ``metrics.json`` and ``run.json`` to ``--out``; ``jetlib evaluate`` scores the
model on the test split.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jetlib.augment import PRESETS as AUGMENT_PRESETS
from jetlib.augment import AugmentConfig, augment
from jetlib.checkpoint import read_run
from jetlib.claim import claim
from jetlib.config import resolve
from jetlib.data.manifest import VALIDATION, Dataset
from jetlib.device import as_input, autocast_for
from jetlib.errors import ConfigError
from jetlib.models.heads import ClassifierHead, RegressionHead
from jetlib.models.resnet import ResNet, ResNetConfig
from jetlib.pretrain import CPU_MODEL, TINY_MODEL
from jetlib.trainer import (
    Stopping,
    classification_scores,
    fit,
    labelled_loaders,
    place,
    predict,
    prepare,
    resources,
    train_epoch,
    trainable_parameters,
    write_outputs,
)
from jetlib.weights import load_adapted

log = logging.getLogger(__name__)
TASKS, MODES = ("cls", "reg"), ("finetune", "linear", "scratch")
DEFAULT_LR = {"cls": 5e-4, "reg": 1e-3}  # Adam / AdamW, as the study


@dataclass(frozen=True)
class FinetuneConfig:
    preset: str = "gpu"
    task: str = "cls"  # cls: quark vs gluon; reg: jet mass m0
    mode: str = "finetune"  # finetune | linear | scratch
    label_fraction: float = 1.0  # one of the dataset's nested train subsets
    validation: str = "fraction"  # fraction: val subset of the same label budget; full: the whole val split
    seed: int = 0  # initialisation of heads (and of scratch encoders), data order, dropout
    epochs: int = 50  # at most
    patience: int = 10  # early stopping: epochs without a better validation score
    batch_size: int = 256
    lr: float | None = None  # None: the task's default (DEFAULT_LR); recorded resolved
    weight_decay: float = 1e-4  # reg (AdamW) only; the classifier uses plain Adam, as the study
    plateau_factor: float = 0.5  # cls: ReduceLROnPlateau on validation accuracy
    plateau_patience: int = 5
    restart_t0: int = 10  # reg: CosineAnnealingWarmRestarts, in epochs
    restart_mult: int = 2
    grad_clip: float = 1.0  # reg: max gradient norm
    head_hidden: int = 256
    head_dropout: float = 0.3
    reg_depth: int = 3  # residual blocks (and supervised outputs) of the regression head
    augment: str = "none"  # optional mild augmentation of training batches: none | seed | physics
    model: ResNetConfig = field(default_factory=ResNetConfig)  # scratch runs without --init only
    normalize: str = "scale"  # loader normalisation (a pretrained encoder's own setting wins)
    eval_batch_size: int = 512
    amp: str = "auto"  # auto: bf16 on CUDA
    channels_last: str = "auto"  # auto: on CUDA

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"--task must be cls or reg, got {self.task!r}")
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.augment not in AUGMENT_PRESETS:
            raise ConfigError(f"augment must be one of {', '.join(AUGMENT_PRESETS)}")
        if not 0 < self.label_fraction <= 1:
            raise ConfigError(f"--label-fraction must be in (0, 1], got {self.label_fraction}")
        if self.validation not in VALIDATION:
            raise ConfigError(f"validation must be one of {', '.join(VALIDATION)}, got {self.validation!r}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("need epochs, patience and batch sizes of at least 1, got "
                              f"{self.epochs}, {self.patience}, {self.batch_size}, {self.eval_batch_size}")

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.task] if self.lr is None else self.lr

    def resolved(self) -> dict:
        """The config as recorded: every field, the learning rate resolved, the augmentation's parameters."""
        return {**asdict(self), "lr": self.learning_rate, "augment_params": asdict(AugmentConfig(self.augment))}


PRESETS = {
    "tiny": {"epochs": 3, "patience": 2, "batch_size": 16, "model": TINY_MODEL, "head_hidden": 16,
             "reg_depth": 2, "eval_batch_size": 64},
    "cpu": {"epochs": 30, "patience": 6, "batch_size": 64, "model": CPU_MODEL, "head_hidden": 128},
    "gpu": {},
}


def make_config(preset: str = "gpu", **values) -> FinetuneConfig:
    return resolve(FinetuneConfig(), PRESETS, preset, values)


class Supervised(nn.Module):
    """Encoder + task head. With ``frozen`` the encoder never trains and stays in eval mode."""

    def __init__(self, encoder: ResNet, head: nn.Module, frozen: bool = False):
        super().__init__()
        self.encoder, self.head, self.frozen = encoder, head, frozen
        if frozen:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.train(False)  # frozen features: no dropout noise
        return self

    def forward(self, x):
        if self.frozen:
            with torch.no_grad():
                h = self.encoder.forward_features(x)
        else:
            h = self.encoder.forward_features(x)
        return self.head(h)  # cls: (B, 2) logits; reg: (depth, B) normalised masses


def make_head(task: str, in_dim: int, cfg: dict) -> nn.Module:
    if task == "cls":
        return ClassifierHead(in_dim, cfg["hidden"], dropout=cfg["dropout"])
    return RegressionHead(in_dim, cfg["hidden"], depth=cfg["depth"])


def build_model(blob: dict) -> Supervised:
    """The network described by a ``model.pt`` blob (weights not loaded)."""
    encoder = ResNet(ResNetConfig.from_dict(blob["encoder_config"]))
    return Supervised(encoder, make_head(blob["task"], encoder.num_features, blob["head"]),
                      frozen=blob["mode"] == "linear")


def load_pretrained(init: str) -> tuple[dict, dict]:
    """(encoder blob, run.json) of a pretraining run, the encoder verified against its sha256."""
    return read_run(init, "encoder", formats=("jetlib.pretrain/1",), flag="--init")


def _encoder(cfg: FinetuneConfig, init: str | None, channels: int) -> tuple[ResNet, list[str], str, dict]:
    """(encoder, adaptation report, normalisation, init description) for the mode."""
    if cfg.mode in ("finetune", "linear") and not init:
        raise ConfigError(f"--mode {cfg.mode} needs --init, the output of jetlib pretrain")
    if not init:
        return ResNet(replace(cfg.model, in_channels=channels)), [], cfg.normalize, {"init": None}
    blob, run = load_pretrained(init)
    model_cfg = replace(ResNetConfig.from_dict(blob["config"]), in_channels=channels)
    encoder = ResNet(model_cfg)
    report = []
    if cfg.mode != "scratch":
        report = load_adapted(encoder, blob["state_dict"])
        for line in report:
            log.info("pretrained weights: %s", line)
    return encoder, report, blob["normalize"], {"init": init, "encoder_sha256": run["encoder"]["sha256"],
                                                "pretrain_seed": run.get("config", {}).get("seed"),
                                                "pretrain_dataset": blob["dataset"]}


def _loss(task: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task == "cls":
        return F.cross_entropy(out.float(), target)
    # deep supervision: the Huber losses of every depth are added
    return sum(F.smooth_l1_loss(o.float(), target) for o in out)


def scorer(task: str, target: tuple[float, float] | None = None):
    """``score(out, batch)`` for :func:`jetlib.trainer.predict`: (loss, quark probability) for cls,
    (loss, mass in GeV of the deepest output) for reg; ``target`` is the mass (mean, std)."""
    def score(out: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if task == "cls":
            return _loss(task, out, batch.y), out.float().softmax(1)[:, 1]
        t = (batch.m0 - target[0]) / target[1]
        return _loss(task, out, t), out[-1].float() * target[1] + target[0]  # de-normalised, GeV
    return score


def finetune(data: str | Dataset, out: str, cfg: FinetuneConfig, init: str | None = None,
             device: str = "auto") -> dict:
    """Train one (task, mode, label fraction, seed); returns the run record (run.json)."""
    dev, ds, store = prepare(data, out, device, cfg.seed, "fine-tuning")
    encoder, report, normalize, origin = _encoder(cfg, init, ds.image_shape[0])
    head_cfg = {"hidden": cfg.head_hidden, "dropout": cfg.head_dropout, "depth": cfg.reg_depth}
    model, channels_last = place(Supervised(encoder, make_head(cfg.task, encoder.num_features, head_cfg),
                                            frozen=cfg.mode == "linear"), dev, cfg.channels_last)
    autocast = autocast_for(dev, cfg.amp)
    train, val, labels = labelled_loaders(ds, cfg.label_fraction, cfg.validation, dev, batch_size=cfg.batch_size,
                                          eval_batch_size=cfg.eval_batch_size, seed=cfg.seed, normalize=normalize)
    stats = ds.manifest["stats"]["m0"]
    target = (stats["mean"], stats["std"])
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.task == "cls":
        optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, fused=dev.type == "cuda")  # one kernel
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.plateau_factor,
                                                               patience=cfg.plateau_patience)
        stopping = Stopping("val_accuracy", True, cfg.patience)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                      fused=dev.type == "cuda")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=cfg.restart_t0,
                                                                         T_mult=cfg.restart_mult)
        stopping = Stopping("val_mae", False, cfg.patience)
    aug = AugmentConfig(cfg.augment)
    log.info("%s %s on %d labelled jets (fraction %g) validated on %d (%s), seed %d, %d trainable parameters",
             cfg.task, cfg.mode, train.rows, cfg.label_fraction, val.rows, labels["validation"], cfg.seed,
             trainable_parameters(model))
    score = scorer(cfg.task, target)

    def step(batch):
        x = augment(batch.x, aug) if cfg.augment != "none" else batch.x
        x = as_input(x, channels_last)  # after the augmentation: grid_sample returns NCHW
        target_ = batch.y if cfg.task == "cls" else (batch.m0 - target[0]) / target[1]
        with autocast():
            loss = _loss(cfg.task, model(x), target_)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.task == "reg":
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        return loss

    def one_epoch(epoch: int) -> dict:
        stats = train_epoch(model, train, epoch, step)
        if cfg.task == "reg":
            scheduler.step()
        return stats

    def validate() -> dict:
        p = predict(model, val, autocast, score)
        if cfg.task == "cls":
            return classification_scores(p)
        err = p["out"] - p["m0"]
        return {"val_loss": p["loss"], "val_mae": float(np.abs(err).mean()),
                "val_rmse": float(np.sqrt((err**2).mean()))}

    def after_validation(val_stats: dict) -> None:
        if cfg.task == "cls":
            scheduler.step(val_stats["val_accuracy"])

    config = {**cfg.resolved(), "init": origin.get("init")}
    # before the first write, after every check of the input (issue 19, item 4)
    claim(store, "finetune", {"config": config, "dataset": ds.manifest["id"]},
          f"{cfg.task} {cfg.mode}, fraction {cfg.label_fraction:g}, seed {cfg.seed}")
    result = fit(store, model, optimizer, scheduler, stopping, cfg.epochs, one_epoch, validate, config,
                 ds.manifest["id"], after_validation)
    blob = {"kind": "resnet", "task": cfg.task, "mode": cfg.mode, "label_fraction": cfg.label_fraction,
            "seed": cfg.seed, "encoder_config": encoder.cfg.to_dict(), "head": head_cfg, "normalize": normalize,
            "target": {"mean": target[0], "std": target[1]}, "dataset": ds.manifest["id"], "origin": origin,
            "adapted": report}
    return write_outputs(store, blob, result, config, {"uri": ds.uri, "id": ds.manifest["id"]},
                         resources(model, dev, train.rows), labels)
