"""Fabricated result files, shaped like ``jetlib evaluate``'s, for report tests that need chosen numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jetlib import records


def fake_result(task: str, mode: str, fraction: float, seed: int, value: float, pretrain_seed: int | None = None,
                dataset_uri: str = "/nonexistent/datasets/toy-000000000000") -> dict:
    """A result whose headline metric (AUC for cls, MAE for reg) is ``value``; other scalars follow from it."""
    rng = np.random.default_rng(seed)
    cls = reg = None
    if task == "cls":
        tpr = np.linspace(0, 1, 11)
        fpr = tpr ** (1 + 4 * (value - 0.5))  # a ROC curve bending further from the diagonal as the AUC grows
        cls = {"accuracy": value - 0.1, "f1": value - 0.15, "roc_auc": value, "rejection_at_eps_s_0.5": 10 * value,
               "rejection_at_eps_s_0.3": 20 * value, "confusion_matrix": [[40, 10], [12, 38]],
               "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()}, "n": 100}
    else:
        bins = [{"lo": 10.0 * b, "hi": 10.0 * b + 10, "n": 10, "true_mean": 10.0 * b + 5, "bias": float(rng.normal()),
                 "relative_bias": None if seed == 1 and b == 0 else float(rng.normal()) / 10}  # None: undefined
                for b in range(4)]
        reg = {"mse": value**2, "rmse": value * 1.2, "mae": value, "r2": 0.5, "bias": 0.1, "relative_resolution": 0.2,
               "relative_resolution_68": 0.15, "relative_bias_median": 0.0, "bias_in_bins": bins, "n": 100}
    keys = ("accuracy", "f1", "roc_auc", "rejection_at_eps_s_0.5", "rejection_at_eps_s_0.3", "mse", "rmse", "mae",
            "r2", "relative_resolution")
    scalars = {k: (cls or {}).get(k, (reg or {}).get(k)) for k in keys}
    sha = f"{task}{mode}{fraction}{seed}{pretrain_seed}".encode().hex().ljust(64, "0")[:64]
    origin = ({"init": f"/runs/pretrain-s{pretrain_seed}", "encoder_sha256": "e" * 64, "pretrain_seed": pretrain_seed}
              if mode in ("finetune", "linear") else None)
    return {"format": records.RESULT, "task": task, "mode": mode, "label_fraction": fraction, "seed": seed,
            "model": {"uri": f"/nonexistent/{task}-{mode}-{fraction}-{seed}", "sha256": sha,
                      "arch": "vgg" if mode == "vgg" else "resnet"},
            "dataset": {"uri": dataset_uri, "id": "000000000000", "split": "test", "jets": 100},
            "scalars": scalars, "classification": cls, "regression": reg,
            "resources": {"trainable_parameters": 1000, "total_parameters": 1000, "peak_memory_mb": 10.0,
                          "device": "cpu", "train_jets": 100, "train_seconds": 1.0, "train_jets_per_s": 100.0,
                          "eval_jets_per_s": 1000.0},
            "training": {"best_epoch": 0}, "config": {"seed": seed, "label_fraction": fraction}, "origin": origin,
            "labels": {"train_jets": 100, "val_jets": 10 if fraction < 1 else 40,
                       "validation": "fraction" if fraction < 1 else "full"}}


def write_results(folder: Path, results: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(results):
        p = "" if r["origin"] is None else f"-p{r['origin']['pretrain_seed']}"
        name = f"{r['task']}-{r['mode']}-f{r['label_fraction']:g}-s{r['seed']}{p}-{i}.json"
        (folder / name).write_text(json.dumps(r))


def study(values: dict[tuple[str, str, float], list[float]]) -> list[dict]:
    """Results for ``{(task, mode, fraction): [value per seed]}``."""
    return [fake_result(task, mode, f, seed, v) for (task, mode, f), vs in values.items()
            for seed, v in enumerate(vs)]
