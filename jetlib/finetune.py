"""``jetlib finetune``: quark/gluon classification and jet-mass regression on a pretrained (or not) encoder.

Modes, all on the same labelled subset (``--label-fraction``) and the same validation
subset, so that they compare fairly:

``finetune``  encoder initialised from a pretraining run (``--init``), trained end to end
``linear``    the same encoder frozen; only the head trains (a linear-probe-style readout)
``scratch``   the same network and hyperparameters from a random initialisation

Tasks (``--task``, :mod:`jetlib.tasks`): each brings its head, loss, prediction, validation score,
monitor and optimiser recipe (hyperparameters of the study):

``cls``  ClassifierHead (dropout 0.3), cross-entropy, Adam lr 5e-4, ReduceLROnPlateau (factor 0.5,
         patience 5) on validation accuracy; the best epoch has the highest validation accuracy
``reg``  RegressionHead (deep supervision), Huber loss on the normalised mass, AdamW lr 1e-3,
         CosineAnnealingWarmRestarts (T0 = 10, T_mult = 2), gradient clipping at 1.0; the best
         epoch has the lowest validation MAE in GeV

The network is the pretrained encoder's ``arch`` (``--init``), else ``arch`` (any registered network,
sized by ``model``: its preset variant, then ``--set model.NAME=VALUE``, checked against the
network's own arguments by :func:`jetlib.models.step_model`), built by :func:`jetlib.models.create`;
the task puts its head on it (``reset_head``) and a linear probe freezes its features (``freeze_features``).

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
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from jetlib import methods, models, records, tasks
from jetlib.augment import PRESETS as AUGMENT_PRESETS
from jetlib.augment import AugmentConfig, augment
from jetlib.claim import claim
from jetlib.config import resolve
from jetlib.data.loader import NORMALIZE
from jetlib.data.manifest import VALIDATION, Dataset
from jetlib.device import as_input, autocast_for, cpu_amp
from jetlib.errors import ConfigError, DataError
from jetlib.models.registry import check_weights
from jetlib.models.resnet import ResNetConfig
from jetlib.schemas import (
    BatchSize,
    Count,
    Dropout,
    Factor,
    Fraction,
    LearningRate,
    Name,
    NonNegCount,
    Positive,
    Seed,
    WeightDecay,
    Width,
    check,
    one_of,
    parse,
    whole,
)
from jetlib.trainer import (
    Stopping,
    fit,
    labelled_loaders,
    place,
    prepare,
    resources,
    train_epoch,
    trainable_parameters,
    write_outputs,
)
from jetlib.weights import load_adapted

log = logging.getLogger(__name__)
MODES = tasks.FINETUNE_MODES
Task = one_of(lambda: tasks.TASKS, "registered tasks")
Mode = one_of(MODES, "fine-tuning modes")
Validation = one_of(VALIDATION, "validation choices")
Augment = one_of(AUGMENT_PRESETS, "augmentation presets")
Arch = one_of(lambda: models.ARCHS, "registered networks")
Normalize = one_of(NORMALIZE, "loader normalisations")
RegDepth = whole(1, 64)


@dataclass(frozen=True)
class FinetuneConfig:
    # Each field's type is its schema (jetlib.schemas): bounds, finiteness, names; checked on construction.
    preset: Name = "gpu"  # the named preset these values started from
    task: Task = "cls"  # a registered task (jetlib.tasks): cls, quark vs gluon; reg, jet mass m0
    mode: Mode = "finetune"  # finetune | linear | scratch
    label_fraction: Fraction = 1.0  # one of the dataset's nested train subsets
    validation: Validation = "fraction"  # fraction: val subset of the same label budget; full: the whole val split
    seed: Seed = 0  # initialisation of heads (and of scratch encoders), data order, dropout
    epochs: Count = 50  # at most
    patience: Count = 10  # early stopping: epochs without a better validation score
    batch_size: BatchSize = 256
    lr: LearningRate | None = None  # None: the task's default (Task.lr); recorded resolved
    weight_decay: WeightDecay = 1e-4  # reg (AdamW) only; the classifier uses plain Adam, as the study
    plateau_factor: Factor = 0.5  # cls: ReduceLROnPlateau on validation accuracy (in (0, 1): a decay)
    plateau_patience: NonNegCount = 5  # cls: epochs without improvement before the lr drops
    restart_t0: Count = 10  # reg: CosineAnnealingWarmRestarts, in epochs
    restart_mult: Count = 2  # reg: each restart period is this many times the last
    grad_clip: Positive = 1.0  # reg: max gradient norm (a negative bound would flip every gradient)
    head_hidden: Width = 256  # hidden width of the task's head
    head_dropout: Dropout = 0.3  # dropout in the task's head, in [0, 1)
    reg_depth: RegDepth = 3  # residual blocks (and supervised outputs) of the regression head
    augment: Augment = "none"  # optional mild augmentation of training batches: none | seed | physics
    arch: Arch = "resnet"  # the network of runs without --init (jetlib.models.ARCHS); --init: the encoder's
    # the constructor arguments of arch in runs without --init: an instance of its config
    # (jetlib.models.config_class), set field by field as model.NAME; make_config starts it from arch's preset size
    model: Any = field(default_factory=ResNetConfig)
    normalize: Normalize = "scale"  # loader normalisation (a pretrained encoder's own setting wins)
    eval_batch_size: BatchSize = 512
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 on CUDA
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on CUDA

    def __post_init__(self):
        check(self)
        object.__setattr__(self, "model", models.model_config(self.arch, self.model))  # arch's own config

    @property
    def learning_rate(self) -> float:
        return tasks.get(self.task).lr if self.lr is None else self.lr

    def resolved(self) -> dict:
        """The config as recorded: every field, the learning rate resolved, the augmentation's parameters."""
        return {**asdict(self), "lr": self.learning_rate, "augment_params": asdict(AugmentConfig(self.augment))}


# A network's size per preset is its own (jetlib.models.variant), not a field here.
PRESETS = {
    "tiny": {"epochs": 3, "patience": 2, "batch_size": 16, "head_hidden": 16,
             "reg_depth": 2, "eval_batch_size": 64},
    # bf16 autocast where the CPU has native bf16. Patience 10, the study's: at 10% labels the
    # validation subset is 50 jets, and with patience 6 one scratch seed in six stopped on its
    # epoch-1 model (scratch's spread over seeds 0.014 AUC, 0.006 with 10; docs/speed.md)
    "cpu": {"epochs": 30, "patience": 10, "batch_size": 64, "head_hidden": 128,
            "amp": cpu_amp()},
    "gpu": {},
}


def make_config(preset: str = "gpu", **values) -> FinetuneConfig:
    """Defaults, the preset, then ``values`` (flags and ``--set``); ``model`` sizes ``arch``: its preset
    variant, then ``model.NAME`` values, checked against its arguments (:func:`jetlib.models.step_model`)."""
    arch = parse(Arch, values.get("arch") or FinetuneConfig.arch, "arch")  # before it sizes anything
    model, values = models.step_model(arch, preset, values)
    return resolve(FinetuneConfig(), PRESETS, preset, {**values, "arch": arch, "model": model})


def load_pretrained(init: str) -> tuple[dict, dict]:
    """(encoder blob, run.json) of a pretraining run, the encoder verified against its sha256."""
    return records.read_run(init, "encoder", records.PRETRAIN, "--init")


def _network(cfg: FinetuneConfig, init: str | None, channels: int) -> tuple[models.Encoder, list[str], str, dict]:
    """(network without its head, adaptation report, normalisation, init description) for the mode."""
    if cfg.mode in ("finetune", "linear") and not init:
        raise ConfigError(f"--mode {cfg.mode} needs --init, the output of jetlib pretrain")
    if not init:
        args = {**asdict(cfg.model), "in_channels": channels}  # its size as configured
        return models.create(cfg.arch, **args), [], cfg.normalize, {"init": None}
    blob, run = load_pretrained(init)  # both passed their schemas (jetlib.schemas.records)
    what = f"--init {init}: encoder.pt"
    arch = check_weights(blob, what)  # the recorded widths against the weights, before anything is allocated
    try:
        net = models.create(arch, **{**blob["config"], "in_channels": channels})
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{what} records a {arch} config that does not build: {e}") from None
    report = []
    if cfg.mode != "scratch":
        report = load_adapted(net, blob["state_dict"])
        for line in report:
            log.info("pretrained weights: %s", line)
    return net, report, blob["normalize"], {"init": init, "encoder_sha256": run["encoder"]["sha256"],
                                            "pretrain_seed": run["config"]["seed"],
                                            # a run.json from before methods were a choice is SimCLR's
                                            "method": run["config"].get("method") or methods.DEFAULT_METHOD,
                                            "pretrain_dataset": blob["dataset"]}


def finetune(data: str | Dataset, out: str, cfg: FinetuneConfig, init: str | None = None,
             device: str = "auto") -> dict:
    """Train one (task, mode, label fraction, seed); returns the run record (run.json)."""
    dev, ds, store = prepare(data, out, device, cfg.seed, "fine-tuning")
    task = tasks.get(cfg.task)
    net, report, normalize, origin = _network(cfg, init, ds.image_shape[0])
    head_cfg = task.head_config(cfg)
    net.reset_head(cfg.task, **head_cfg)
    if cfg.mode == "linear":
        net.freeze_features()
    model, channels_last = place(net, dev, cfg.channels_last)
    autocast = autocast_for(dev, cfg.amp)
    train, val, labels = labelled_loaders(ds, cfg.label_fraction, cfg.validation, dev, batch_size=cfg.batch_size,
                                          eval_batch_size=cfg.eval_batch_size, seed=cfg.seed, normalize=normalize)
    norm = task.normalisation(ds)
    params = [p for p in model.parameters() if p.requires_grad]
    recipe = task.recipe(params, cfg, fused=dev.type == "cuda")
    optimizer = recipe.optimizer
    stopping = Stopping(task.monitor, task.higher_is_better, cfg.patience)
    aug = AugmentConfig(cfg.augment)
    log.info("%s %s on %d labelled jets (fraction %g) validated on %d (%s), seed %d, %d trainable parameters",
             cfg.task, cfg.mode, train.rows, cfg.label_fraction, val.rows, labels["validation"], cfg.seed,
             trainable_parameters(model))

    def step(batch):
        x = augment(batch.x, aug) if cfg.augment != "none" else batch.x
        x = as_input(x, channels_last)  # after the augmentation: grid_sample returns NCHW
        with autocast():
            loss = task.loss(model(x), task.target(batch, norm))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        optimizer.step()
        return loss

    def one_epoch(epoch: int) -> dict:
        stats = train_epoch(model, train, epoch, step)
        recipe.after_epoch()
        return stats

    def validate() -> dict:
        return task.val_scores(task.predict(model, val, autocast, norm))

    config = {**cfg.resolved(), "init": origin.get("init")}
    # before the first write, after every check of the input: bad input leaves no claim behind
    claim(store, "finetune", {"config": config, "dataset": ds.manifest["id"]},
          f"{cfg.task} {cfg.mode}, fraction {cfg.label_fraction:g}, seed {cfg.seed}")
    result = fit(store, model, optimizer, recipe.scheduler, stopping, cfg.epochs, one_epoch, validate, config,
                 ds.manifest["id"], recipe.after_validation)
    blob = {"arch": net.arch, "config": net.config(), "task": cfg.task, "head": head_cfg, "mode": cfg.mode,
            "label_fraction": cfg.label_fraction, "seed": cfg.seed, "normalize": normalize, "target": norm,
            "dataset": ds.manifest["id"], "origin": origin, "adapted": report}
    return write_outputs(store, blob, result, config, {"uri": ds.uri, "id": ds.manifest["id"]},
                         resources(model, dev, train.rows), labels)
