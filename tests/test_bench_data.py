"""The baseline of ``benchmarks/data.py``'s ``stream_host_speedup`` does the same work as the loader it is
compared with: ``benchmarks/legacy_loader.py`` (the streaming host path as it was at commit 8d4aafb) yields exactly the
host tensors of :meth:`jetlib.data.loader.JetLoader._host_batches` for the same seed and epoch, so the
speedup compares two ways of producing the same batches, not two different amounts of work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from jetlib.data.loader import JetLoader
from jetlib.data.manifest import open_dataset
from jetlib.data.prefetch import in_background
from tests.conftest import ingest_small

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from legacy_loader import legacy_host_batches  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return open_dataset(ingest_small(tmp_path_factory.mktemp("bench-data"), n=400))


def _new(ds, seed: int, epoch: int, batch_size: int) -> list[dict]:
    loader = JetLoader(ds, "train", batch_size=batch_size, seed=seed, mode="stream")
    loader.set_epoch(epoch)
    return list(in_background(loader._host_batches(pin=False), loader.prefetch))


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k].to(y[k].dtype), y[k]) for k in x)
                                    for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("seed,epoch,batch_size", [(0, 0, 32), (5, 3, 32), (1, 2, 48)])
def test_the_legacy_host_path_yields_the_loaders_batches(dataset, seed, epoch, batch_size):
    new = _new(dataset, seed, epoch, batch_size)
    old = list(legacy_host_batches(dataset, batch_size=batch_size, seed=seed, epoch=epoch))
    assert dataset.rows("train") // batch_size == len(new) > 4  # several shuffle windows
    assert set(new[0]) == {"idx", "val", "counts", "jet", "y", "m0", "pt"}
    assert new[0]["idx"].dtype == torch.int32 and old[0]["idx"].dtype == torch.int64  # the change measured
    assert _same(new, old)


def test_another_epoch_gives_other_batches(dataset):
    """The comparison above can fail: a different shuffle is told apart."""
    assert not _same(_new(dataset, 0, 0, 32), list(legacy_host_batches(dataset, batch_size=32, seed=0, epoch=1)))


def test_stopping_early_leaves_no_reader_thread(dataset):
    import threading

    before = set(threading.enumerate())
    batches = legacy_host_batches(dataset, batch_size=32, seed=0, epoch=0)
    next(batches)
    assert set(threading.enumerate()) - before  # its reader is running
    batches.close()
    assert not set(threading.enumerate()) - before


@pytest.mark.slow  # the benchmark in a subprocess, timed loops: ~6 s of CPU, ~20 s wall
def test_the_benchmark_prints_its_json_line(tmp_path):
    """``benchmarks/data.py`` runs end to end (on a given file, not a simulation) and reports every contender."""
    import json
    import os
    import subprocess

    from tests.conftest import write_toy_h5

    write_toy_h5(tmp_path / "jets.h5", n=300)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "data.py"), "--source", str(tmp_path / "jets.h5"),
                          "--batch-size", "32", "--seconds", "0.3"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["benchmark"] == "data" and line["jets"] == 300 and line["batch_size"] == 32
    for key in ("loader_jets_per_s", "naive_jets_per_s", "resident_jets_per_s", "stream_jets_per_s",
                "stream_host_jets_per_s", "stream_host_legacy_jets_per_s"):
        assert line[key] > 0, key
    ratio = line["stream_host_jets_per_s"] / line["stream_host_legacy_jets_per_s"]
    assert abs(line["stream_host_speedup"] - ratio) <= 0.01
    assert line["compression"] > 1
