"""What a run lacks: holes in the (task, mode, fraction, seed) grid and steps that did not finish.

The expected grid is the product of what was found: for each task, every mode seen for
that task, every label fraction and every seed seen anywhere in the study (and, for the
pretrained modes, every pretraining seed). A partial run still gets a report; this
module says exactly which cells are empty and which steps stopped half-way.
"""

from __future__ import annotations

import itertools

from jetlib.report.collect import Study
from jetlib.report.stats import fmt_fraction, order_modes, pretrain_id
from jetlib.study import PRETRAINED  # the pipeline's own list: a hole is what the plan would have run


def _cell(task, mode, fraction, seed, pseed) -> str:
    p = f", pretraining {'seed ' if isinstance(pseed, int) else 'run '}{pseed}" if pseed is not None else ""
    return f"{task} {mode} at {fmt_fraction(fraction)} labels, seed {seed}{p}"


def grid_holes(results: list[dict]) -> list[str]:
    """Missing (task, mode, fraction, seed[, pretraining seed]) combinations."""
    have = {(r["task"], r["mode"], float(r["label_fraction"]), r.get("seed"),
             pretrain_id(r) if r["mode"] in PRETRAINED else None) for r in results}
    fractions = sorted({h[2] for h in have})
    seeds = sorted({h[3] for h in have}, key=str)
    pseeds = sorted({h[4] for h in have if h[4] is not None}, key=str) or [None]
    holes = []
    for task in sorted({h[0] for h in have}):
        for mode in order_modes(h[1] for h in have if h[0] == task):
            ps = pseeds if mode in PRETRAINED else [None]
            for fraction, seed, pseed in itertools.product(fractions, seeds, ps):
                if (task, mode, fraction, seed, pseed) not in have:
                    holes.append(f"no result for {_cell(task, mode, fraction, seed, pseed)}")
    return holes


def missing(study: Study) -> list[str]:
    """Every gap, one line each, in a stable order."""
    lines = grid_holes(study.results)
    evaluated = {(r.get("model") or {}).get("sha256") for r in study.results}
    for step in study.trainings:
        run = step.run
        sha = (run.get("model") or {}).get("sha256")
        what = f"{run.get('task')} {run.get('mode')} at {fmt_fraction(float(run.get('label_fraction', 1)))}, " \
               f"seed {run.get('seed')}"
        if "model.pt" not in step.artifacts:
            lines.append(f"training run {step.uri} ({what}) has no model.pt")
        if sha not in evaluated:
            lines.append(f"training run {step.uri} ({what}) finished but has no result file (not evaluated)")
    for step in study.pretrains:
        if "encoder.pt" not in step.artifacts:
            lines.append(f"pretraining run {step.uri} has no encoder.pt")
        if step.metrics is None:
            lines.append(f"pretraining run {step.uri} has no metrics.json")
    for step in study.unfinished:
        lines.append(f"step {step.uri} started but did not finish (checkpoints or metrics, no run.json)")
    if any(r["mode"] in PRETRAINED for r in study.results) and not study.pretrains:
        lines.append("no pretraining run in this folder: pretraining curves and encoder maps are not shown")
    if not study.results:
        lines.append("no result files: nothing was evaluated on the test split yet")
    lines += [f"unreadable: {u}" for u in study.unreadable]
    return lines
