"""``jetlib pretrain``: SimCLR pretraining of the ResNet-15 encoder, one CPU process to many GPUs.

The same command runs alone or under ``torchrun --nproc_per_node N -m jetlib pretrain``
(DDP: NCCL on GPU, gloo on CPU). Labels are never read for training; they only feed
the k-NN monitor when the dataset has them.

Outputs in ``--out`` (a store URI), main rank only:

``checkpoints/``  every epoch (see :mod:`jetlib.checkpoint`); a re-run of the same
                  command resumes from the newest and ends bit-for-bit where an
                  uninterrupted run would (on CPU)
``metrics.json``  per epoch: loss, temperature, learning rate, jets/s, k-NN accuracy, and
                  ``step_losses``: ``[[global_step, loss], ...]`` every ``log_interval`` steps
                  (the loss of the global batch, averaged over ranks)
``encoder.pt``    the encoder's weights and config, for fine-tuning
``run.json``      written last: the commit, with the encoder's sha256, the resolved config
                  (augmentation parameters included) and the provenance (git commit, packages)
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from jetlib import dist, records
from jetlib.augment import PRESETS as AUGMENT_PRESETS
from jetlib.augment import AugmentConfig, two_views
from jetlib.checkpoint import Checkpoints, resume, rng_states, save_object, seed_everything
from jetlib.claim import claim
from jetlib.config import resolve
from jetlib.data.loader import MODES as LOADER_MODES
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import Dataset, open_dataset
from jetlib.data.store import open_store
from jetlib.device import as_input, autocast_for, channels_last_for, prepare_compile, setup_device
from jetlib.errors import ConfigError, TrainingError
from jetlib.losses import InfoNCELoss
from jetlib.models.heads import ProjectionHead
from jetlib.models.resnet import VARIANTS, ResNet, ResNetConfig
from jetlib.monitor import knn_accuracy
from jetlib.progress import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    preset: str = "gpu"  # the named preset these values started from
    epochs: int = 100
    batch_size: int = 256  # global batch: split evenly over the ranks
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4  # AdamW, on weights only (not norms, biases, temperature)
    warmup_epochs: int = 10  # linear warmup, then cosine decay to zero (per step)
    temperature: float = 0.07  # initial InfoNCE temperature (learned)
    proj_hidden: int = 512  # projector hidden width
    proj_dim: int = 128  # projector output: where the loss is computed
    augment: str = "seed"  # augmentation preset: seed | physics
    model: ResNetConfig = field(default_factory=ResNetConfig)
    seed: int = 0  # seeds init, augmentations (offset per rank) and the data order
    normalize: str = "scale"  # loader normalisation
    max_steps_per_epoch: int = 0  # 0 = the whole train split each epoch
    monitor_bank: int = 2000  # k-NN monitor: labelled train jets in the bank
    monitor_val: int = 1000  # k-NN monitor: validation jets scored
    knn_k: int = 20
    amp: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | off
    channels_last: str = "auto"  # auto (= off until measured: see jetlib.device) | on | off
    compile: bool = False  # torch.compile the model
    keep_every: int = 0  # also keep every Nth epoch's checkpoint (0: only the newest)
    log_interval: int = 10  # read the loss back (a device sync) and record it every N steps
    loader: str = "auto"  # auto | resident | stream: see jetlib.data.loader (the batches are the same)

    def __post_init__(self):
        if self.augment not in AUGMENT_PRESETS:
            raise ConfigError(f"--augment must be one of {', '.join(AUGMENT_PRESETS)}, got {self.augment!r}")
        if self.epochs < 1 or self.batch_size < 2 or not self.lr > 0:
            raise ConfigError("need epochs >= 1, batch size >= 2 and a positive learning rate")
        at_least = {"log_interval": 1, "proj_hidden": 1, "proj_dim": 1, "knn_k": 1, "warmup_epochs": 0,
                    "max_steps_per_epoch": 0, "monitor_bank": 0, "monitor_val": 0, "keep_every": 0}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if not self.temperature > 0 or not self.weight_decay >= 0:
            raise ConfigError(f"need temperature > 0 and weight_decay >= 0, got {self.temperature} and "
                              f"{self.weight_decay}")
        if self.amp not in ("auto", "bf16", "off") or self.channels_last not in ("auto", "on", "off"):
            raise ConfigError("amp must be auto|bf16|off and channels_last auto|on|off")
        if self.loader not in LOADER_MODES:
            raise ConfigError(f"loader must be one of {', '.join(LOADER_MODES)}, got {self.loader!r}")


TINY_MODEL, CPU_MODEL = VARIANTS["tiny"], VARIANTS["cpu"]  # the named widths of jetlib.models.resnet

PRESETS = {
    # seconds on tiny generated data, yet two epochs so that resuming is exercised
    "tiny": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "model": TINY_MODEL, "proj_hidden": 16,
             "proj_dim": 8, "monitor_bank": 64, "monitor_val": 32, "knn_k": 5, "log_interval": 1},
    # a laptop run in minutes: a narrower ResNet-15 (405k parameters)
    "cpu": {"epochs": 10, "batch_size": 64, "warmup_epochs": 1, "model": CPU_MODEL, "proj_hidden": 256,
            "monitor_bank": 1000, "monitor_val": 500},
    # the full study
    "gpu": {},
}


def make_config(preset: str = "gpu", **values) -> PretrainConfig:
    return resolve(PretrainConfig(), PRESETS, preset, values)


class SimCLR(nn.Module):
    """Encoder + projector + loss in one module, so DDP syncs the temperature with the weights."""

    def __init__(self, encoder: ResNet, proj_hidden: int, proj_dim: int, temperature: float):
        super().__init__()
        self.encoder = encoder
        self.projector = ProjectionHead(encoder.num_features, proj_hidden, proj_dim)
        self.loss = InfoNCELoss(temperature)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        b = v1.shape[0]
        z = self.projector(self.encoder.forward_features(torch.cat([v1, v2])))  # (2B, D): one pass
        return self.loss(z[:b], z[b:])


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        (decay if p.ndim > 1 else no_decay).append(p)  # norms, biases and the temperature: no decay
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_one_epoch(model: nn.Module, loader: JetLoader, optimizer, cfg: PretrainConfig, step: int,
                    total_steps: int, warmup_steps: int, steps: int, autocast, channels_last: bool,
                    epoch: int) -> tuple[dict, int]:
    """One pass; returns (averaged stats, next step). Stops loudly on a non-finite loss.

    The loss is read back to the host (a device sync) only every ``cfg.log_interval`` steps
    and at the last step, as nanoGPT does; the finiteness check rides on the same read. A
    non-finite loss seen there stops the run before this epoch's checkpoint is written.
    """
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
        lr = lr_at(step, total_steps, warmup_steps, cfg.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        v1, v2 = two_views(batch.x, aug)  # (B, C, H, W) each, fp32, NCHW (grid_sample's output)
        v1, v2 = as_input(v1, channels_last), as_input(v2, channels_last)  # the layout change after it, once
        with autocast():
            loss = model(v1, v2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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


def _unwrap(model: nn.Module) -> SimCLR:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def pretrain(data: str | Dataset, out: str, cfg: PretrainConfig, device: str = "auto") -> dict:
    """Run (or resume) pretraining; returns the final epoch's metrics."""
    dev = setup_device(device, distributed=True)
    if cfg.compile:  # before anything is written: caches in a writable folder, or one line on what is missing
        prepare_compile(dev)
    try:
        return _pretrain(data, out, cfg, dev)
    finally:
        dist.cleanup()


def _pretrain(data, out, cfg: PretrainConfig, device: torch.device) -> dict:
    ds = data if isinstance(data, Dataset) else open_dataset(data)
    world, rank = dist.world_size(), dist.rank()
    if cfg.batch_size % world:
        raise ConfigError(f"global batch {cfg.batch_size} does not split evenly over {world} ranks")
    model_cfg = replace(cfg.model, in_channels=ds.image_shape[0])
    store = open_store(out)
    if dist.is_main():
        store.check_writable()
    ckpts = Checkpoints(store.child("checkpoints"), cfg.keep_every)

    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = SimCLR(ResNet(model_cfg), cfg.proj_hidden, cfg.proj_dim, cfg.temperature).to(device)
    # Off unless asked for: GroupNorm on CUDA returns NCHW (see jetlib.device), and on CPU oneDNN's AVX2 1x1
    # weight-gradient kernel (the stride-2 shortcuts) can spin forever in channels_last with torch 2.14.1.
    channels_last = channels_last_for(cfg.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # fused: one kernel for the whole update on CUDA (nanoGPT); the CPU path stays the reference
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, fused=device.type == "cuda")
    loader = JetLoader(ds, "train", batch_size=cfg.batch_size // world, device=device, seed=cfg.seed,
                       normalize=cfg.normalize, mode=cfg.loader)
    steps = len(loader) if not cfg.max_steps_per_epoch else min(len(loader), cfg.max_steps_per_epoch)
    if steps == 0:
        raise ConfigError(f"batch size {cfg.batch_size} is larger than the train split ({loader.rows} jets)")
    total_steps, warmup_steps = cfg.epochs * steps, cfg.warmup_epochs * steps

    history, start, step = [], 0, 0
    if dist.is_main():  # before the first write, after every check of the input (issue 19, item 4)
        claim(store, "pretrain", {"config": asdict(cfg), "dataset": ds.manifest["id"]}, f"seed {cfg.seed}")
    saved = resume(ckpts, config=asdict(cfg), dataset_id=ds.manifest["id"], model=model, optimizer=optimizer,
                   map_location=device)
    if saved is not None:
        history, start, step = saved["history"], saved["epoch"] + 1, saved["step"]
    else:
        torch.manual_seed(cfg.seed + 1_000_003 * rank)  # augmentations differ across ranks
    if dist.is_main():
        n_params = sum(p.numel() for p in _unwrap(model).encoder.parameters())
        log.info("pretraining %s (%d encoder parameters) on %s x %d, %d jets, %d steps/epoch, augment=%s",
                 cfg.preset, n_params, device, world, loader.rows, steps, cfg.augment)

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    autocast = autocast_for(device, cfg.amp)
    monitor = ds.labelled and cfg.monitor_bank > 0
    if monitor and dist.is_main():
        # streamed: they read only the first monitor_bank / monitor_val jets, not a second resident copy
        bank = JetLoader(ds, "train", batch_size=256, device=device, shuffle=False, normalize=cfg.normalize,
                         rank=0, world_size=1, mode="stream")
        val = JetLoader(ds, "val", batch_size=256, device=device, shuffle=False, normalize=cfg.normalize,
                        rank=0, world_size=1, mode="stream")

    for epoch in range(start, cfg.epochs):
        loader.set_epoch(epoch)
        stats, step = train_one_epoch(net, loader, optimizer, cfg, step, total_steps, warmup_steps, steps,
                                      autocast, channels_last, epoch)
        stats = {"epoch": epoch, **stats, "temperature": _unwrap(model).loss.temperature}
        if dist.is_main() and monitor:
            stats["knn_accuracy"] = knn_accuracy(_unwrap(model).encoder, bank, val, cfg.monitor_bank,
                                                 cfg.monitor_val, cfg.knn_k, autocast)
        history.append(stats)
        rngs = rng_states()  # every rank's, after the monitor: what the next epoch starts from
        if dist.is_main():
            ckpts.save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch, "step": step, "rng": rngs, "config": asdict(cfg),
                        "dataset": ds.manifest["id"], "history": history}, epoch)
            _write_metrics(store, cfg, ds, history)
            log.info("epoch %d: loss %.4f, T %.4f, lr %.2e, %.0f jets/s%s", epoch, stats["loss"],
                     stats["temperature"], stats["lr"], stats["jets_per_s"],
                     f", k-NN acc {stats['knn_accuracy']:.3f}" if "knn_accuracy" in stats else "")
        dist.barrier()

    final = _summary(history[-1]) if history else {}
    if dist.is_main():
        _finish(store, cfg, ds, model_cfg, _unwrap(model), history, device)
    dist.barrier()
    return final


def _write_metrics(store, cfg, ds, history) -> None:
    doc = {"step": "pretrain", "config": asdict(cfg), "augment_params": asdict(AugmentConfig(cfg.augment)),
           "dataset": {"uri": ds.uri, "id": ds.manifest["id"]}, "epochs": history}
    records.write_json(store, "metrics.json", doc)


def _summary(stats: dict) -> dict:
    """An epoch's stats without the per-step losses (those stay in metrics.json)."""
    return {k: v for k, v in stats.items() if k != "step_losses"}


def _finish(store, cfg, ds, model_cfg, model: SimCLR, history, device) -> None:
    encoder = {"arch": "resnet", "config": model_cfg.to_dict(), "state_dict": model.encoder.state_dict(),
               "normalize": cfg.normalize, "channel_names": ds.manifest["image"]["channel_names"],
               "dataset": ds.manifest["id"], "pretrain": asdict(cfg)}
    record = save_object(store, "encoder.pt", encoder)
    _write_metrics(store, cfg, ds, history)
    records.write_run(store, records.PRETRAIN, {
        "dataset": {"uri": ds.uri, "id": ds.manifest["id"]}, "encoder": record,
        "final": _summary(history[-1]) if history else {}, "config": asdict(cfg),
        "augment_params": asdict(AugmentConfig(cfg.augment)), "world_size": dist.world_size(),
        "torch": torch.__version__, "host": os.uname().nodename}, device)
    log.info("encoder written to %s", store.key_uri("encoder.pt"))
