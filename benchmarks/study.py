"""The study in one command: does SimCLR pretraining beat training from scratch with few labels?

On a simulated quark/gluon dataset (``jetlib simulate``, cached under ``.cache/bench``):
pretrain once with the ``cpu`` preset, then for every label fraction and seed train
every mode (``finetune``, ``linear``, ``scratch`` for classification and mass
regression, and the VGG baseline for classification) with the ``cpu`` preset, and
score each on the same test split. Prints one JSON line: test AUC (classification)
and MAE in GeV (regression) per mode and fraction, as mean and standard deviation
over seeds, and for each fraction whether fine-tuning beats scratch by more than the
seed-to-seed spread (the difference of the means against the spread of that
difference, ``sqrt(std_ft^2 + std_scratch^2)``). Everything it trained stays in
``--work`` for inspection.

    python benchmarks/study.py [--n-jets 8000] [--fractions 0.01,0.1] [--seeds 0,1,2] [--work .cache/study]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import simulated_file  # noqa: E402

from jetlib import baseline, finetune, pretrain  # noqa: E402
from jetlib.data.ingest import ingest  # noqa: E402
from jetlib.evaluate import evaluate  # noqa: E402

MODES = ("finetune", "linear", "scratch")


def summarise(results: list[dict]) -> dict:
    """{task: {mode: {fraction: {mean, std, seeds}}}} of test AUC (cls) or MAE (reg)."""
    table: dict = {}
    for r in results:
        metric = r["scalars"]["roc_auc"] if r["task"] == "cls" else r["scalars"]["mae"]
        cell = table.setdefault(r["task"], {}).setdefault(r["mode"], {}).setdefault(f"{r['label_fraction']:g}", [])
        cell.append(metric)
    return {task: {mode: {f: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                              "values": v} for f, v in by_f.items()} for mode, by_f in modes.items()}
            for task, modes in table.items()}


def verdicts(summary: dict) -> dict:
    """Per task and fraction: does finetune beat scratch by more than the seed-to-seed spread?"""
    out = {}
    for task, sign in (("cls", 1), ("reg", -1)):  # higher AUC is better; lower MAE is better
        modes = summary.get(task, {})
        for f in modes.get("finetune", {}):
            ft, sc = modes["finetune"][f], modes["scratch"][f]
            gain = sign * (ft["mean"] - sc["mean"])
            spread = float(np.hypot(ft["std"], sc["std"]))
            out[f"{task}@{f}"] = {"gain": gain, "spread": spread, "beats_scratch": bool(gain > spread)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-jets", type=int, default=8000)
    ap.add_argument("--fractions", default="0.01,0.1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--pretrain-epochs", type=int, default=0, help="0: the preset's")
    ap.add_argument("--augment", default="seed")
    ap.add_argument("--work", default=str(ROOT / ".cache" / "study"))
    args = ap.parse_args()
    os.environ.setdefault("JETLIB_PROGRESS", "0")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work)
    t0 = time.perf_counter()

    src = simulated_file(args.n_jets, 0)
    data = ingest(src, str(work / "store"))
    values = {"augment": args.augment, **({"epochs": args.pretrain_epochs} if args.pretrain_epochs else {})}
    pre_cfg = pretrain.make_config(args.preset, **values)
    pre_dir = str(work / "runs" / f"pretrain-{args.augment}-e{pre_cfg.epochs}")
    final = pretrain.pretrain(data, pre_dir, pre_cfg, device="cpu")
    print(f"pretrained: {final}", file=sys.stderr)

    results = []
    for f in fractions:
        for seed in seeds:
            for task in ("cls", "reg"):
                for mode in MODES:
                    out = str(work / "runs" / f"{task}-{mode}-f{f:g}-s{seed}")
                    cfg = finetune.make_config(args.preset, task=task, mode=mode, label_fraction=f, seed=seed)
                    finetune.finetune(data, out, cfg, init=pre_dir if mode != "scratch" else None, device="cpu")
                    results.append(evaluate(data, out, str(work / "results"), device="cpu"))
            out = str(work / "runs" / f"cls-vgg-f{f:g}-s{seed}")
            baseline.baseline(data, out, baseline.make_config(args.preset, label_fraction=f, seed=seed), device="cpu")
            results.append(evaluate(data, out, str(work / "results"), device="cpu"))
            print(f"done fraction {f:g} seed {seed} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    summary = summarise(results)
    print(json.dumps({
        "benchmark": "study",
        "jets": args.n_jets,
        "preset": args.preset,
        "augment": args.augment,
        "pretrain_epochs": pre_cfg.epochs,
        "pretrain_final": {k: final.get(k) for k in ("loss", "temperature", "knn_accuracy")},
        "seeds": seeds,
        "test_auc": summary.get("cls", {}),
        "test_mae_gev": summary.get("reg", {}),
        "finetune_vs_scratch": verdicts(summary),
        "seconds": round(time.perf_counter() - t0, 1),
        "device": "cpu",
    }))


if __name__ == "__main__":
    main()
