"""SimCLR pretraining throughput: jetlib against a straightforward implementation, same run, same machine.

Both train the same SimCLR model (the preset's ResNet-15, projector, InfoNCE with a
learnable temperature) with AdamW on the same batch size, in fp32, for a fixed wall-clock
window after a warm-up, and count jets per second:

* ``jetlib``: sparse shards streamed by :class:`~jetlib.data.loader.JetLoader`, densified on
  the device, two views made by the batched augmentations of :mod:`jetlib.augment`;
* ``baseline``: what the study describes, written the usual way: an h5py ``Dataset`` that
  reads one jet per ``__getitem__``, normalises it to [0, 1] and makes two views with
  torchvision per-sample transforms (flip, ``RandomResizedCrop`` with scale >= 0.8,
  ``ColorJitter`` brightness) in ``DataLoader`` worker processes.

Prints one JSON line with both rates and their ratio (goal on CPU: >= 1.5x). With
``--device cuda`` it measures on the GPU instead (bf16 autocast and channels_last for
jetlib, as ``jetlib pretrain`` uses them; the baseline stays fp32), and names the card.

    python benchmarks/pretrain.py [--preset cpu] [--seconds 40] [--workers 2] [--device cpu]
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

from jetlib.augment import AugmentConfig, two_views  # noqa: E402
from jetlib.data.ingest import ingest  # noqa: E402
from jetlib.data.loader import JetLoader  # noqa: E402
from jetlib.device import autocast_for  # noqa: E402
from jetlib.models.resnet import ResNet  # noqa: E402
from jetlib.pretrain import SimCLR, make_config, param_groups  # noqa: E402


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


def model_and_optimizer(cfg, device):
    torch.manual_seed(0)
    model = SimCLR(ResNet(replace(cfg.model, in_channels=3)), cfg.proj_hidden, cfg.proj_dim, cfg.temperature)
    model = model.to(device)
    return model, torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--n-jets", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="baseline DataLoader workers")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    os.environ.setdefault("JETLIB_PROGRESS", "0")
    device = torch.device(args.device)
    cfg = make_config(args.preset)
    bs = cfg.batch_size
    src = simulated_file(args.n_jets, 0)
    channels_last = device.type == "cuda"  # as jetlib pretrain decides with channels_last=auto
    autocast = autocast_for(device, cfg.amp)

    with tempfile.TemporaryDirectory() as store:
        uri = ingest(src, store)
        loader = JetLoader(uri, "train", batch_size=bs, device=device, seed=0)
        model, opt = model_and_optimizer(cfg, device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        aug = AugmentConfig(cfg.augment)
        epochs = iter(range(10**9))

        def ours():
            loader.set_epoch(next(epochs))
            for batch in loader:
                x = batch.x.contiguous(memory_format=torch.channels_last) if channels_last else batch.x
                v1, v2 = two_views(x, aug)
                with autocast():
                    loss = model(v1, v2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                yield len(batch)

        fast = timed(ours, args.seconds)

    with h5py.File(src) as f:
        n = len(f["y"])
    baseline_data = torch.utils.data.DataLoader(ContrastiveH5(src, n), batch_size=bs, shuffle=True, drop_last=True,
                                                num_workers=args.workers, persistent_workers=args.workers > 0)
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
        "batch_size": bs,
        "encoder_parameters": sum(p.numel() for p in model.encoder.parameters()),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "jetlib_jets_per_s": round(fast, 1),
        "baseline_jets_per_s": round(slow, 1),
        "speedup": round(fast / slow, 2),
        "speedup_goal_cpu": 1.5,
        "baseline_workers": args.workers,
        "jetlib_precision": "bf16" if autocast is not None and device.type == "cuda" else "fp32",
        "seconds_per_contender": args.seconds,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
