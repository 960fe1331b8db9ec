"""The study in one command: does self-supervised pretraining beat training from scratch with few labels?

On a simulated quark/gluon dataset (``jetlib simulate``, cached under ``.cache/bench``):
pretrain once per method (``--methods``, SimCLR by default) and pretraining seed
(``--pretrain-seeds``) with the ``cpu`` preset, then
for every label fraction and fine-tuning seed train every mode (``finetune`` and
``linear`` on every pretrained encoder, ``scratch`` for classification and mass
regression, and the VGG baseline for classification) with the ``cpu`` preset, and score
each on the same test split. Every run chooses its best epoch on the validation subset
of its own label budget (``--validation fraction``, the default; ``full`` uses the whole
val split, as the study did before).

Prints one JSON line per method (the baselines are shared, so their numbers repeat): test
AUC (classification) and MAE in GeV (regression) per mode and fraction, as mean and
standard deviation over every run of that cell (fine-tuning seeds x pretraining seeds for
the pretrained modes, so the spread includes pretraining variance), the
per-pretraining-seed means, and for each fraction whether fine-tuning beats scratch by
more than the spread (the difference of the means against the spread of that difference,
``sqrt(std_ft^2 + std_scratch^2)``) and does so from every pretraining seed; and
``verdicts``, the report's words for each fine-tuned-vs-baseline comparison
(:class:`jetlib.report.stats.Comparison`: the difference against its standard error).
Everything it trained stays in ``--work``; re-running the same command skips finished
runs, and a partial table is printed to stderr after each (fraction, seed).

    python benchmarks/study.py [--n-jets 4000] [--fractions 0.01,0.1] [--seeds 0,1] [--pretrain-seeds 0,1]
                               [--methods simclr,vicreg,barlowtwins,byol]
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

from jetlib import baseline, finetune, pretrain, tasks  # noqa: E402
from jetlib.data.ingest import ingest  # noqa: E402
from jetlib.evaluate import evaluate  # noqa: E402
from jetlib.methods import METHODS  # noqa: E402
from jetlib.report import stats  # noqa: E402

MODES = ("finetune", "linear", "scratch")
PRETRAINED = ("finetune", "linear")


def headline(task: str):
    """The task's main test metric (:class:`jetlib.tasks.Metric`): ROC AUC for cls, MAE in GeV for reg."""
    t = tasks.get(task)
    return t.report_metrics[t.headline[0]]


def metric(r: dict) -> float:
    return r["scalars"][headline(r["task"]).key]


def _stats(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def summarise(results: list[dict]) -> dict:
    """{task: {mode: {fraction: {mean, std, n, values[, by_pretrain_seed]}}}} of each task's headline metric.

    mean and std are over every run in the cell: seeds x pretraining seeds for the pretrained modes."""
    cells: dict = {}
    for r in results:
        if metric(r) is None:
            continue
        key = (r["task"], r["mode"], f"{r['label_fraction']:g}")
        pseed = (r.get("origin") or {}).get("pretrain_seed")
        cells.setdefault(key, {}).setdefault(pseed, []).append(metric(r))
    table: dict = {}
    for (task, mode, f), by_pseed in cells.items():
        cell = _stats([v for vs in by_pseed.values() for v in vs])
        if mode in PRETRAINED:
            cell["by_pretrain_seed"] = {str(p): float(np.mean(v)) for p, v in sorted(by_pseed.items())}
        table.setdefault(task, {}).setdefault(mode, {})[f] = cell
    return table


def verdicts(summary: dict) -> dict:
    """Per task and fraction: does finetune beat scratch by more than the spread over all its seeds?"""
    out = {}
    for task, modes in summary.items():
        sign = 1 if headline(task).higher_is_better else -1  # higher AUC is better; lower MAE is better
        for f in modes.get("finetune", {}):
            if f not in modes.get("scratch", {}):
                continue
            ft, sc = modes["finetune"][f], modes["scratch"][f]
            gain = sign * (ft["mean"] - sc["mean"])
            spread = float(np.hypot(ft["std"], sc["std"]))
            per_pseed = {p: sign * (m - sc["mean"]) for p, m in ft["by_pretrain_seed"].items()}
            out[f"{task}@{f}"] = {"gain": gain, "spread": spread, "beats_scratch": bool(gain > spread),
                                  "gain_by_pretrain_seed": per_pseed,
                                  "beats_scratch_from_every_pretraining": bool(
                                      gain > spread and all(g > spread for g in per_pseed.values()))}
    return out


def of_method(results: list[dict], method: str) -> list[dict]:
    """The baselines' results and the pretrained results whose encoder ``method`` trained."""
    return [r for r in results if stats.method_of(r) in (None, method)]


def report_verdicts(results: list[dict], method: str) -> dict:
    """The report's verdict of each fine-tuned ``method`` encoder against each baseline, per task and fraction."""
    cells = stats.aggregate(results)
    return {f"{c.task}_{c.metric}@{c.fraction:g}_vs_{c.base}": {"delta": c.text(), "verdict": c.verdict}
            for c in stats.comparisons(cells, modes=(stats.cell_mode("finetune", method),))}


def trained(out: str, train) -> None:
    """Run ``train()`` unless ``out`` already holds a finished run (re-running the study skips it)."""
    if not (Path(out) / "run.json").exists():
        train()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-jets", type=int, default=4000)
    ap.add_argument("--fractions", default="0.01,0.1")
    ap.add_argument("--seeds", default="0,1", help="fine-tuning seeds")
    ap.add_argument("--pretrain-seeds", default="0,1")
    ap.add_argument("--methods", default="simclr", help=f"pretraining methods, a subset of {','.join(METHODS)}")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--pretrain-epochs", type=int, default=0, help="0: the preset's")
    ap.add_argument("--augment", default="seed")
    ap.add_argument("--validation", default="fraction", choices=("fraction", "full"))
    ap.add_argument("--modes", default="finetune,linear,scratch,vgg", help="a subset of these, to save time")
    ap.add_argument("--from-results", action="store_true",
                    help="train nothing: summarise the result files already in --work (e.g. of studies run in "
                         "parallel on different --fractions)")
    ap.add_argument("--work", default=str(ROOT / ".cache" / "study"))
    ap.add_argument("--prepare", action="store_true",
                    help="simulate and ingest the dataset into --work, then stop: run this once before studies "
                         "that share one --work in parallel, so that they do not simulate it at the same time")
    args = ap.parse_args()
    os.environ.setdefault("JETLIB_PROGRESS", "0")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    pseeds = [int(s) for s in args.pretrain_seeds.split(",")]
    modes = args.modes.split(",")
    chosen = args.methods.split(",")
    if not chosen or set(chosen) - set(METHODS):
        ap.error(f"--methods: choose from {', '.join(METHODS)}")
    if "finetune" in modes and "scratch" not in modes:  # e.g. one process per method, scratch trained by one
        print("--modes without scratch: no finetune-vs-scratch verdict in this line; print it with --from-results "
              "once scratch has run on the same --work", file=sys.stderr)
    work = Path(args.work)
    runs, res = work / "runs", str(work / "results")
    t0 = time.perf_counter()

    src = simulated_file(args.n_jets, 0)
    data = ingest(src, str(work / "store"))
    if args.prepare:
        print(json.dumps({"benchmark": "study", "prepared": data, "jets": args.n_jets}))
        return
    finals, pre_dirs = {}, {}
    for m in chosen:
        for p in pseeds:
            values = {"augment": args.augment, "seed": p, "method": m,
                      **({"epochs": args.pretrain_epochs} if args.pretrain_epochs else {})}
            pre_cfg = pretrain.make_config(args.preset, **values)
            pre_dirs[m, p] = str(runs / f"pretrain-{m}-{args.augment}-e{pre_cfg.epochs}-s{p}")
            done = Path(pre_dirs[m, p]) / "run.json"  # finished before: not rewritten (another study may read it)
            finals[m, p] = (json.loads(done.read_text())["final"] if done.exists()
                            else pretrain.pretrain(data, pre_dirs[m, p], pre_cfg, device="cpu"))
            print(f"pretrained {m} seed {p}: {finals[m, p]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    results = []
    if args.from_results:
        results = [json.loads(f.read_text()) for f in sorted(Path(res).glob("*.json"))]
        results = [r for r in results if r["label_fraction"] in fractions and r["seed"] in seeds
                   and r["mode"] in modes and (r.get("origin") or {}).get("pretrain_seed", pseeds[0]) in pseeds
                   and stats.method_of(r) in (None, *chosen)]
        fractions = []  # nothing to train

    def run(task: str, mode: str, f: float, seed: int, p: int | None = None, m: str | None = None) -> None:
        name = f"{task}-{mode}-f{f:g}-s{seed}" + (f"-{m}-p{p}" if p is not None else "")
        out = str(runs / name)
        if mode == "vgg":
            cfg = baseline.make_config(args.preset, label_fraction=f, seed=seed, validation=args.validation)
            trained(out, lambda: baseline.baseline(data, out, cfg, device="cpu"))
        else:
            cfg = finetune.make_config(args.preset, task=task, mode=mode, label_fraction=f, seed=seed,
                                       validation=args.validation)
            trained(out, lambda: finetune.finetune(data, out, cfg, init=pre_dirs.get((m, p)), device="cpu"))
        results.append(evaluate(data, out, res, device="cpu"))

    for f in fractions:
        for seed in seeds:
            for task in tasks.all_tasks():
                if "scratch" in modes:
                    run(task.name, "scratch", f, seed)
                for m in chosen:
                    for p in pseeds:
                        for mode in (x for x in PRETRAINED if x in modes):
                            run(task.name, mode, f, seed, p, m)
            for task in tasks.all_tasks():
                for mode in (m for m in task.baselines if m in modes):  # the VGG baseline: classification
                    run(task.name, mode, f, seed)
            print(f"done fraction {f:g} seed {seed} ({time.perf_counter() - t0:.0f} s): "
                  f"{json.dumps({m: summarise(of_method(results, m)) for m in chosen})}", file=sys.stderr)

    labels = {f"{r['label_fraction']:g}": r["labels"] for r in results if r.get("labels")}
    for m in chosen:
        print_method(args, m, of_method(results, m), {p: finals[m, p] for p in pseeds}, labels, pre_cfg.epochs,
                     seeds, pseeds, modes, time.perf_counter() - t0)


def print_method(args, method: str, results: list[dict], finals: dict, labels: dict, epochs: int, seeds: list,
                 pseeds: list, modes: list, seconds: float) -> None:
    """One JSON line: ``method``'s pretrained results against the (shared) baselines."""
    summary = summarise(results)
    print(json.dumps({
        "benchmark": "study",
        "method": method,
        "jets": args.n_jets,
        "preset": args.preset,
        "augment": args.augment,
        "validation": args.validation,
        "modes": modes,
        "labels": labels,
        "pretrain_epochs": epochs,
        "pretrain_final": {str(p): {**{k: fin.get(k) for k in ("loss", "temperature", "knn_accuracy")},
                                    "embedding": fin.get("embedding")} for p, fin in finals.items()},
        "seeds": seeds,
        "pretrain_seeds": pseeds,
        **{f"test_{t.headline[0]}": summary.get(t.name, {}) for t in tasks.all_tasks()},  # test_auc, test_mae
        "finetune_vs_scratch": verdicts(summary),
        "verdicts": report_verdicts(results, method),
        "seconds": round(seconds, 1),  # of the whole study so far, every method's
        "device": "cpu",
    }))


if __name__ == "__main__":
    main()
