"""Pretraining throughput, timed through jetlib's own training step (:func:`jetlib.pretrain.train_one_epoch`).

Two measurements, same run, same machine:

* ``pretrain_method`` (one JSON line per method in :data:`jetlib.methods.METHODS`): jets per
  second and milliseconds per step of each method, timed in interleaved rounds of the real
  epoch function (same loader, augmentations, optimiser and per-step hook as ``jetlib
  pretrain``), and ``relative_to_simclr`` (step time over SimCLR's);
* ``pretrain`` (one line): jetlib's SimCLR step against a straightforward implementation of the
  study's pipeline, the ``baseline``: an h5py ``Dataset`` that reads one jet per
  ``__getitem__``, normalises it to [0, 1] and makes two views with torchvision per-sample
  transforms (flip, ``RandomResizedCrop`` with scale >= 0.8, ``ColorJitter`` brightness) in
  ``DataLoader`` worker processes, feeding the same model and AdamW (goal on CPU: >= 1.5x).

With ``--device cuda`` it measures on the GPU instead (bf16 autocast and channels_last as
``jetlib pretrain`` decides them; the baseline stays fp32), and names the card. ``--smoke``
runs everything for a moment on the tiny preset (a test runs it).

    python benchmarks/pretrain.py [--preset cpu] [--seconds 40] [--workers 2] [--device cpu]
                                  [--methods simclr,vicreg] [--no-baseline] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import h5py
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import simulated_file, timed  # noqa: E402

from jetlib import methods  # noqa: E402
from jetlib.data.ingest import ingest  # noqa: E402
from jetlib.data.loader import JetLoader  # noqa: E402
from jetlib.device import autocast_for, channels_last_for  # noqa: E402
from jetlib.models.resnet import ResNet  # noqa: E402
from jetlib.pretrain import lr_schedule, make_config, train_one_epoch  # noqa: E402


class ContrastiveH5(torch.utils.data.Dataset):
    """The study's ContrastiveDataset: one jet per item, normalised to [0, 1], two torchvision views."""

    def __init__(self, path: Path, n: int):
        from torchvision import transforms as T

        self.path, self.n, self.f = path, n, None
        self.transform = T.Compose([
            T.RandomHorizontalFlip(),
            T.RandomResizedCrop(125, scale=(0.8, 1.0), antialias=True),
            T.ColorJitter(brightness=0.2),
        ])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.f is None:
            self.f = h5py.File(self.path, "r")
        x = torch.from_numpy(self.f["X_jets"][i]).permute(2, 0, 1).float()  # (C, H, W)
        x = x / x.amax().clamp_min(1e-12)
        return self.transform(x), self.transform(x)


def model_and_optimizer(cfg, device, channels_last=False):
    """The method of ``cfg`` and its AdamW, as :func:`jetlib.pretrain.pretrain` builds them."""
    torch.manual_seed(0)
    model = methods.create(cfg.method, ResNet(replace(cfg.model, in_channels=3)), cfg.method_params).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.AdamW(model.param_groups(cfg.weight_decay), lr=cfg.lr, fused=device.type == "cuda")


def time_methods(uri, names, preset, device, seconds: float, steps: int) -> dict[str, dict]:
    """Jets/s and step time of each method through ``train_one_epoch``, in interleaved rounds of ``steps``
    steps (one warm-up round first), until each has trained ``seconds``: a machine that slows down
    mid-run slows every method alike."""
    runs = {}
    for name in names:
        cfg = replace(make_config(preset, method=name), max_steps_per_epoch=steps, log_interval=steps)
        loader = JetLoader(uri, "train", batch_size=cfg.batch_size, device=device, seed=0)
        channels_last = channels_last_for(cfg.channels_last)
        model, opt = model_and_optimizer(cfg, device, channels_last)
        runs[name] = {"cfg": cfg, "loader": loader, "model": model, "opt": opt, "channels_last": channels_last,
                      "autocast": autocast_for(device, cfg.amp), "step": 0, "epoch": 0, "seconds": 0.0,
                      "steps": 0, "jets": 0, "steps_per_epoch": min(len(loader), steps)}
    schedule = lr_schedule(100_000, 100, runs[names[0]]["cfg"].lr)  # the values do not change the timing
    warm = True
    while warm or min(r["seconds"] for r in runs.values()) < seconds or not all(r["steps"] for r in runs.values()):
        for r in runs.values():
            r["loader"].set_epoch(r["epoch"])
            stats, r["step"] = train_one_epoch(r["model"], r["loader"], r["opt"], r["cfg"], r["step"], schedule,
                                               r["steps_per_epoch"], r["autocast"], r["channels_last"], r["epoch"])
            r["epoch"] += 1
            if not warm:
                r["seconds"] += stats["seconds"]
                r["steps"] += stats["steps"]
                r["jets"] += stats["steps"] * r["loader"].batch_size
        warm = False
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--n-jets", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=40.0, help="per contender")
    ap.add_argument("--steps", type=int, default=5, help="steps per round of the method comparison")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="baseline DataLoader workers")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default="", help="comma-separated (default: every registered method)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the straightforward implementation")
    ap.add_argument("--smoke", action="store_true", help="tiny preset, 200 jets, a moment each (for tests)")
    args = ap.parse_args()
    if args.smoke:
        args.preset, args.n_jets, args.seconds, args.steps, args.workers = "tiny", 200, 0.0, 1, 0
    os.environ.setdefault("JETLIB_PROGRESS", "0")
    device = torch.device(args.device)
    names = [m for m in args.methods.split(",") if m] or list(methods.METHODS)
    if "simclr" in names:  # the reference first
        names.remove("simclr")
    names.insert(0, "simclr")
    src = simulated_file(args.n_jets, 0)
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__}

    with tempfile.TemporaryDirectory() as store:
        uri = ingest(src, store)
        runs = time_methods(uri, names, args.preset, device, args.seconds, args.steps)
    ref = runs["simclr"]["seconds"] / runs["simclr"]["steps"]
    for name, r in runs.items():
        step_s = r["seconds"] / r["steps"]
        print(json.dumps({
            "benchmark": "pretrain_method", "method": name, "preset": r["cfg"].preset,
            "batch_size": r["cfg"].batch_size, "method_params": r["cfg"].method_params,
            "trainable_parameters": sum(p.numel() for p in r["model"].parameters() if p.requires_grad),
            "steps": r["steps"], "step_ms": round(1000 * step_s, 2), "jets_per_s": round(r["jets"] / r["seconds"], 1),
            "relative_to_simclr": round(step_s / ref, 3), **env}), flush=True)
    if args.no_baseline:
        return
    fast = runs["simclr"]["jets"] / runs["simclr"]["seconds"]
    cfg = runs["simclr"]["cfg"]
    with h5py.File(src) as f:
        n = len(f["y"])
    baseline_data = torch.utils.data.DataLoader(ContrastiveH5(src, n), batch_size=cfg.batch_size, shuffle=True,
                                                drop_last=True, num_workers=args.workers,
                                                persistent_workers=args.workers > 0)
    model, opt = model_and_optimizer(cfg, device)

    def baseline():
        for v1, v2 in baseline_data:
            loss = model(v1.to(device), v2.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield len(v1)

    slow = timed(baseline, args.seconds)
    print(json.dumps({
        "benchmark": "pretrain",
        "preset": cfg.preset,
        "batch_size": cfg.batch_size,
        "encoder_parameters": sum(p.numel() for p in model.encoder.parameters()),
        "jetlib_jets_per_s": round(fast, 1),
        "baseline_jets_per_s": round(slow, 1),
        "speedup": round(fast / slow, 2),
        "speedup_goal_cpu": 1.5,
        "baseline_workers": args.workers,
        "jetlib_precision": "bf16" if cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda") else "fp32",
        "seconds_per_contender": args.seconds,
        **env,
    }), flush=True)


if __name__ == "__main__":
    main()
