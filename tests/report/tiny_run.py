"""A tiny but real study run folder for the report tests: every step of the pipeline, in seconds.

Pretraining, then classification (finetune, scratch, VGG) and regression (finetune,
scratch) at two label fractions and two seeds, each scored by ``jetlib evaluate``:
the same layout the pipeline writes (``RUN/pretrain-s0/``, ``RUN/<task>-<mode>-f<f>-s<seed>-p0/``,
``RUN/results/``). Images are 24x24, pretraining runs 2 epochs and every supervised training 1.
"""

from __future__ import annotations

from pathlib import Path

from jetlib import baseline as bl
from jetlib import finetune as ft
from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.splits import SplitConfig
from jetlib.evaluate import evaluate
from jetlib.pretrain import make_config as pretrain_config
from jetlib.pretrain import pretrain
from jetlib.study import pretrain_dir, training_dir
from tests.conftest import write_toy_h5

FRACTIONS = (0.5, 1.0)
SEEDS = (0, 1)
GRID = (("cls", "finetune"), ("cls", "scratch"), ("cls", "vgg"), ("reg", "finetune"), ("reg", "scratch"))


def make_tiny_run(root: Path, n_jets: int = 100, size: int = 24) -> tuple[str, str]:
    """Write the run under ``root / "run"``; returns (run folder, dataset URI)."""
    write_toy_h5(root / "toy.h5", n=n_jets, size=size)
    cfg = IngestConfig(split=SplitConfig(label_fractions=FRACTIONS), shard_rows=64, row_group_rows=16,
                       image_size=None)
    data = ingest(root / "toy.h5", str(root / "store"), cfg=cfg)
    run = root / "run"
    pre = pretrain_dir(str(run), 0)  # the folders the pipeline writes, named where it names them
    pretrain(data, pre, pretrain_config("tiny", epochs=2), device="cpu")
    for task, mode in GRID:
        for fraction in FRACTIONS:
            for seed in SEEDS:
                out = training_dir(str(run), task, mode, fraction, seed, 0)
                if mode == "vgg":
                    cfg = bl.make_config("tiny", epochs=1, label_fraction=fraction, seed=seed)
                    bl.baseline(data, out, cfg, device="cpu")
                else:
                    cfg = ft.make_config("tiny", task=task, mode=mode, epochs=1, label_fraction=fraction,
                                         seed=seed, lr=3e-3)
                    ft.finetune(data, out, cfg, init=pre if mode == "finetune" else None, device="cpu")
                evaluate(data, out, str(run / "results"), device="cpu")
    return str(run), data
