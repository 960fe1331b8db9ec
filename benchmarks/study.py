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

Each method pretrains with its own recipe (:attr:`jetlib.methods.base.Method.recipe`). With
``--tune-trials N`` every (method, pretraining seed s) is first searched by ``jetlib tune``
(:func:`jetlib.tune.study.tune`, seeded with s, in ``WORK/tune/<method>-s<s>``) for N trials of
``--tune-epochs`` epochs, and that pretraining runs the recipe the search found, so the spread over
pretraining seeds includes the search's own. The search's first trial is the method's untuned recipe
(:func:`start_from_recipe`), so the recipe found is never worse than it on the objective. The trials run
with the study's seed and augmentations; when they also run the study's epochs, the best trial's run
is the study's pretraining (the same ``jetlib pretrain``), not trained a second time. The JSON line
carries each pretraining's recipe and its search's objective (the validation k-NN accuracy).

    python benchmarks/study.py [--n-jets 4000] [--fractions 0.01,0.1] [--seeds 0,1] [--pretrain-seeds 0,1]
                               [--methods simclr,vicreg,barlowtwins,byol] [--tune-trials 4 --tune-epochs 3]
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
from jetlib.tune import study as tune_study  # noqa: E402
from jetlib.tune.recipe import read_recipe  # noqa: E402

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


def start_from_recipe(out: Path, method: str, preset: str, sets: dict) -> None:
    """Queue ``method``'s own recipe as the first trial of the search in ``out`` (once, before it begins).

    Seeded TPE samples its first trials at random over a tenth to ten times each value; a search of a
    few trials that never tried the recipe could return a random point worse than it. With the recipe
    as trial 0 the recipe found scores at least the untuned one's validation k-NN accuracy. SimCLR's
    trial runs its temperature fixed (the search's rule) at the recipe's starting 0.07."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from jetlib import methods
    from jetlib.losses.barlowtwins import default_lambda

    if (out / "study.journal").exists():  # begun before: its first trial was queued then
        return
    cfg = pretrain.make_config(preset, method=method, **sets)
    params = methods.params(method, cfg.method_params)
    first = {"lr": cfg.lr, "weight_decay": cfg.weight_decay or 1e-5}  # the centres of jetlib.tune.study.space
    for name in tune_study.space(method, cfg):
        if name not in first:
            value = getattr(params, name)
            first[name] = default_lambda(params.proj_dim) if name == "lambd" and value is None else value
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    study = optuna.create_study(study_name=f"jetlib-{method}", storage=storage, direction="maximize",
                                load_if_exists=True)  # the name and direction jetlib.tune.study.tune opens
    study.enqueue_trial(first)


def tuned(data: str, work: Path, method: str, pseed: int, trials: int, sets: dict, preset: str) -> dict:
    """Search ``method``'s recipe for pretraining seed ``pseed`` (or continue the search); its result."""
    out = work / "tune" / f"{method}-s{pseed}"
    start_from_recipe(out, method, preset, sets)
    return tune_study.tune(data, str(out), method, trials, preset=preset, sets=sets, seed=pseed, device="cpu")


def recipe_used(cfg) -> dict:
    """The training hyperparameters a pretraining ran (what a recipe sets)."""
    return {"optimizer": cfg.optimizer, "lr": cfg.lr, "lr_batch": cfg.lr_batch, "peak_lr": pretrain.peak_lr(cfg),
            "weight_decay": cfg.weight_decay, "warmup_epochs": cfg.warmup_epochs,
            "method_params": dict(cfg.method_params)}


def suffix(trials: int, tune_epochs: int) -> str:
    """A tuned encoder's runs are named apart from an untuned one's, so one --work never mixes them."""
    return f"-tuned{trials}x{tune_epochs}" if trials else ""


def pretraining(data: str, runs: Path, method: str, pseed: int, preset: str, augment: str, epochs: int,
                trials: int = 0, tune_epochs: int = 0) -> tuple[str, dict, dict, dict | None]:
    """Pretrain ``method`` with seed ``pseed`` (skipped when done), after its search when ``trials`` > 0.

    Returns the run folder, its final metrics, :func:`recipe_used` and the search's result (None untuned).
    The search lives in ``runs/../tune/<method>-s<pseed>`` and its trials run the study's seed and
    augmentations; when they also ran ``epochs``, the best trial's run is this pretraining."""
    values = {"augment": augment, "seed": pseed, "method": method, "epochs": epochs}
    recipe = search = None
    if trials:
        tune_epochs = tune_epochs or epochs
        found = tuned(data, runs.parent, method, pseed, trials,
                      {"epochs": tune_epochs, "seed": pseed, "augment": augment}, preset)
        recipe = read_recipe(found["recipe"])
        search = {k: found[k] for k in ("knn_accuracy", "best_trial", "trials")}
        print(f"tuned {method} seed {pseed}: {json.dumps(search)} {json.dumps(found['values'])}", file=sys.stderr)
    cfg = pretrain.make_config(preset, recipe=recipe, **values)
    out = runs / f"pretrain-{method}-{augment}-e{cfg.epochs}-s{pseed}{suffix(trials, tune_epochs or epochs)}"
    best = Path(recipe["study"]["run"]) if recipe else None
    if best is not None and tune_epochs == epochs and (best / "run.json").exists():
        out = best  # the search's best trial ran this very pretraining
    done = out / "run.json"  # finished before: not rewritten (another study may read it)
    final = json.loads(done.read_text())["final"] if done.exists() else pretrain.pretrain(data, str(out), cfg,
                                                                                           device="cpu")
    return str(out), final, recipe_used(cfg), search


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
    ap.add_argument("--tune-trials", type=int, default=0,
                    help="jetlib tune trials per method and pretraining seed before it pretrains "
                         "(0: each method's own recipe, untuned)")
    ap.add_argument("--tune-epochs", type=int, default=0,
                    help="pretraining epochs of each tuning trial (0: the study's pretraining epochs)")
    ap.add_argument("--validation", default="fraction", choices=("fraction", "full"))
    ap.add_argument("--modes", default="finetune,linear,scratch,vgg", help="a subset of these, to save time")
    ap.add_argument("--from-results", action="store_true",
                    help="train nothing: summarise the result files already in --work (e.g. of studies run in "
                         "parallel on different --fractions)")
    ap.add_argument("--work", default=str(ROOT / ".cache" / "study"))
    ap.add_argument("--prepare", action="store_true",
                    help="simulate and ingest the dataset into --work, then stop: run this once before studies "
                         "that share one --work in parallel, so that they do not simulate it at the same time")
    ap.add_argument("--pretrain-only", action="store_true",
                    help="tune (with --tune-trials) and pretrain --methods into --work, then stop: split the "
                         "searches by method over processes first, then the fine-tuning runs by --seeds")
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
    if args.tune_trials < 0 or args.tune_epochs < 0:
        ap.error("--tune-trials and --tune-epochs: 0 or more")
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
    finals, pre_dirs, recipes, searches = {}, {}, {}, {}
    epochs = args.pretrain_epochs or pretrain.make_config(args.preset).epochs
    tune_epochs = args.tune_epochs or epochs
    tag = suffix(args.tune_trials, tune_epochs)
    for m in chosen:
        for p in pseeds:
            pre_dirs[m, p], finals[m, p], recipes[m, p], search = pretraining(
                data, runs, m, p, args.preset, args.augment, epochs, args.tune_trials, tune_epochs)
            if search:
                searches[m, p] = search
            print(f"pretrained {m} seed {p}: {finals[m, p]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.pretrain_only:
        print(json.dumps({"benchmark": "study", "pretrained": {f"{m}-s{p}": d for (m, p), d in pre_dirs.items()},
                          "recipe": {f"{m}-s{p}": r for (m, p), r in recipes.items()},
                          "tune": {f"{m}-s{p}": r for (m, p), r in searches.items()},
                          "seconds": round(time.perf_counter() - t0, 1)}))
        return

    results = []
    if args.from_results:
        results = [json.loads(f.read_text()) for f in sorted(Path(res).glob("*.json"))]
        results = [r for r in results if r["label_fraction"] in fractions and r["seed"] in seeds
                   and r["mode"] in modes and (r.get("origin") or {}).get("pretrain_seed", pseeds[0]) in pseeds
                   and stats.method_of(r) in (None, *chosen)]
        fractions = []  # nothing to train

    def run(task: str, mode: str, f: float, seed: int, p: int | None = None, m: str | None = None) -> None:
        name = f"{task}-{mode}-f{f:g}-s{seed}" + (f"-{m}-p{p}{tag}" if p is not None else "")
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
        print_method(args, m, of_method(results, m), {p: finals[m, p] for p in pseeds}, labels, epochs,
                     seeds, pseeds, modes, time.perf_counter() - t0,
                     {str(p): recipes[m, p] for p in pseeds},
                     {str(p): searches[m, p] for p in pseeds if (m, p) in searches}, tune_epochs)


def print_method(args, method: str, results: list[dict], finals: dict, labels: dict, epochs: int, seeds: list,
                 pseeds: list, modes: list, seconds: float, recipes: dict, searches: dict, tune_epochs: int) -> None:
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
        "recipe": recipes,  # per pretraining seed: the optimiser, rates and method parameters it ran
        "tune": {"trials": args.tune_trials, "epochs": tune_epochs if args.tune_trials else 0,
                 "objective": "knn_accuracy on val", "by_pretrain_seed": searches},
        **{f"test_{t.headline[0]}": summary.get(t.name, {}) for t in tasks.all_tasks()},  # test_auc, test_mae
        "finetune_vs_scratch": verdicts(summary),
        "verdicts": report_verdicts(results, method),
        "seconds": round(seconds, 1),  # of the whole study so far, every method's
        "device": "cpu",
    }))


if __name__ == "__main__":
    main()
