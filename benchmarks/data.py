"""Data-layer benchmark: storage size and loading speed, against their baselines, in one run.

Prints one JSON line:

* ``compression``: dense float32 bytes / sparse shard bytes of the ingested dataset
  (goal: at least 30x);
* ``speedup``: jetlib loader jets/s / a naive ``torch.utils.data.Dataset`` that reads
  one jet per ``__getitem__`` from the HDF5 file with h5py, batched and shuffled by a
  ``DataLoader`` (goal: at least 20x). Both produce the same batches: float32
  ``(B, C, H, W)`` divided by the train std per channel, with y, m0, pt; both run
  on the same simulated file on the same machine, one after the other;
* the loader's two modes side by side: ``resident_jets_per_s`` and
  ``stream_jets_per_s`` (CPU, densify included), and ``stream_host_jets_per_s``, the
  streaming mode's host path alone (fetch, decode, shuffle, gather into int32/float32
  tensors: what stays on the CPU when the device is a GPU), measured on its prefetch thread;
  ``stream_host_legacy_jets_per_s``, the same host path as it was at commit 8d4aafb
  (:mod:`legacy_loader`: the same batches, shuffled and gathered on the consumer thread, one reader),
  and ``stream_host_speedup``, their ratio (goal: at least 2x).
  ``--repeat K`` tiles the simulated file K times, so that an epoch holds many shuffle windows.

The simulated file is cached under ``.cache/bench/`` (simulation takes ~1 min for
1,000 jets on 2 cores). Usage::

    python benchmarks/data.py [--n-jets 1000] [--repeat 1] [--batch-size 256] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import simulated_file, timed  # noqa: E402
from legacy_loader import legacy_host_batches  # noqa: E402

from jetlib.data.ingest import ingest  # noqa: E402
from jetlib.data.loader import JetLoader  # noqa: E402
from jetlib.data.manifest import open_dataset  # noqa: E402
from jetlib.data.prefetch import in_background  # noqa: E402


class NaiveH5Dataset(torch.utils.data.Dataset):
    """What the study's code does: one jet per __getitem__, straight from h5py."""

    def __init__(self, path, rows, scale):
        self.path, self.rows, self.scale, self.f = path, rows, torch.as_tensor(scale).view(-1, 1, 1), None

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        if self.f is None:
            self.f = h5py.File(self.path, "r")
        r = int(self.rows[i])
        x = torch.from_numpy(self.f["X_jets"][r]).permute(2, 0, 1).float() * self.scale
        return x, int(self.f["y"][r]), float(self.f["m0"][r]), float(self.f["pt"][r])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-jets", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=20.0, help="timing window per contender")
    ap.add_argument("--repeat", type=int, default=1, help="tile the simulated file this many times")
    ap.add_argument("--source", type=Path, help="an HDF5 file of jets to use instead of simulating --n-jets")
    args = ap.parse_args()
    os.environ.setdefault("JETLIB_PROGRESS", "0")
    torch.set_num_threads(os.cpu_count() or 1)

    src = args.source or simulated_file(args.n_jets, args.seed)
    with h5py.File(src) as f:
        jets = len(f["y"])
    if args.repeat > 1:
        src = _tiled(src, args.repeat)
    with tempfile.TemporaryDirectory() as store:
        t = time.perf_counter()
        ds = open_dataset(ingest(src, store))
        ingest_s = time.perf_counter() - t
        b = ds.manifest["bytes"]
        train = [int(j) for s in ds.shards("train") for j in _jets(ds, s)]
        bs = min(args.batch_size, len(train))

        loader = JetLoader(ds, "train", batch_size=bs, seed=0)
        epochs = iter(range(10**9))

        def ours():
            loader.set_epoch(next(epochs))
            return (len(b) for b in loader)

        fast = timed(ours, args.seconds)
        modes = {}
        for mode in ("resident", "stream"):
            each = JetLoader(ds, "train", batch_size=bs, seed=0, mode=mode)
            modes[mode] = timed(_epochs(each, lambda ld: (len(b) for b in ld)), args.seconds)
        each = JetLoader(ds, "train", batch_size=bs, seed=0, mode="stream")
        legacy_epochs = iter(range(10**9))

        def legacy():
            return (len(p["jet"]) for p in legacy_host_batches(ds, batch_size=bs, seed=0, epoch=next(legacy_epochs)))

        hosts: dict[str, list[float]] = {"new": [], "legacy": []}
        for _ in range(2):  # alternating halves, so that a change of load on a shared machine hits both
            hosts["new"].append(timed(_epochs(each, lambda ld: (len(p["jet"]) for p in in_background(
                ld._host_batches(pin=False), ld.prefetch))), args.seconds / 2))
            hosts["legacy"].append(timed(legacy, args.seconds / 2))
        host, legacy_host = (float(np.mean(hosts[k])) for k in ("new", "legacy"))
        naive_ds = NaiveH5Dataset(src, np.array(train), ds.channel_scale())
        naive = torch.utils.data.DataLoader(naive_ds, batch_size=bs, shuffle=True, drop_last=True)
        slow = timed(lambda: (len(b[0]) for b in naive), args.seconds)
    result = {
        "benchmark": "data",
        "jets": jets,
        "source": str(args.source) if args.source else "simulated",
        "train_jets": len(train),
        "source_file_bytes": src.stat().st_size,
        "dense_float32_bytes": b["dense_float32"],
        "shard_bytes": b["shards"],
        "compression": round(b["dense_float32"] / b["shards"], 2),
        "compression_goal": 30,
        "ingest_s": round(ingest_s, 2),
        "batch_size": bs,
        "loader_jets_per_s": round(fast, 1),
        "naive_jets_per_s": round(slow, 1),
        "speedup": round(fast / slow, 2),
        "speedup_goal": 20,
        "loader_mode": loader.mode,
        "resident_jets_per_s": round(modes["resident"], 1),
        "stream_jets_per_s": round(modes["stream"], 1),
        "stream_host_jets_per_s": round(host, 1),
        "stream_host_legacy_jets_per_s": round(legacy_host, 1),
        "stream_host_speedup": round(host / legacy_host, 2),
        "stream_host_speedup_goal": 2,
        "repeat": args.repeat,
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    print(json.dumps(result))


def _epochs(loader, batches):
    """A ``timed`` step source: each call starts the loader's next epoch and yields its batch sizes."""
    epochs = iter(range(10**9))

    def run():
        loader.set_epoch(next(epochs))
        return batches(loader)
    return run


def _tiled(src: Path, k: int) -> Path:
    """The simulated file repeated ``k`` times (same jets; more shards and windows per epoch), cached."""
    path = src.with_name(f"{src.stem}-x{k}.h5")
    if not path.exists():
        with h5py.File(src) as f, h5py.File(path.with_suffix(".partial"), "w") as g:
            for name in f:
                data = np.concatenate([f[name][:]] * k)
                g.create_dataset(name, data=data, chunks=f[name].chunks, compression=f[name].compression)
        path.with_suffix(".partial").rename(path)
    return path


def _jets(ds, shard):
    from jetlib.data.shards import parquet_file

    return parquet_file(ds.read_shard(shard)).read(columns=["jet"]).column("jet").to_numpy()


if __name__ == "__main__":
    main()
