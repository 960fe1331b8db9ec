"""The numbers sections of the report: headline, metric tables, classification, resources, provenance.

Each function takes what :mod:`jetlib.report.collect` and :mod:`jetlib.report.stats`
produced and returns a :class:`~jetlib.report.blocks.Section`; figures come from
:mod:`jetlib.report.figures`. No section invents a number: each cell is a mean, a
standard deviation or a count recomputed from the result files.
"""

from __future__ import annotations

import json

import numpy as np

from jetlib import tasks
from jetlib.report import figures
from jetlib.report.blocks import Bullets, Figure, Para, Pre, Section, Table
from jetlib.report.collect import Study
from jetlib.report.stats import (
    METRICS,
    MODE_LABEL,
    comparisons,
    fmt_fraction,
    headline,
    mode_rank,
    order_modes,
    overview,
    pretrain_seed,
    result_mode,
)


def fmt_agg(agg, fmt: str) -> str:
    """``mean ± std (n)``; ``undefined (reason)`` when no seed has a value."""
    if agg is None:
        return "—"
    if not agg.n:
        return "undefined (" + "; ".join(agg.undefined) + ")" if agg.undefined else "—"
    text = f"{agg.mean:{fmt}}" + (f" ± {agg.std:{fmt}}" if agg.std is not None else "") + f" ({agg.n})"
    if agg.undefined:
        text += f", {len(agg.undefined)} undefined"
    return text


def headline_section(cells: dict, spread: str) -> Section:
    s = Section("headline", "Does pretraining help?")
    sentences = headline(cells)
    if not sentences:
        s.add(Para("No comparison is possible yet: the run holds no fine-tuned result together with a "
                   "scratch or VGG result at the same label fraction.", strong=True))
        return s
    s.add(Para(overview(cells), strong=True))
    s.add(Bullets(sentences))
    rows = []
    cs = comparisons(cells)
    for c in cs:
        m = METRICS[c.metric]
        label, higher, fmt = m.label, m.higher_is_better, m.fmt
        rows.append([label + (" ↑" if higher else " ↓"), fmt_fraction(c.fraction), fmt_agg(c.a, fmt),
                     MODE_LABEL[c.base], fmt_agg(c.b, fmt), c.text(),
                     f"{abs(c.gain) / c.sigma:.1f}σ" if c.sigma else "—", c.verdict])
    s.add(Table(["metric", "labels", "fine-tuned: mean ± std (n)", "compared with", "baseline: mean ± std (n)",
                 "Δ (fine-tuned − baseline) ± σΔ", "|Δ|/σΔ", "verdict"], rows))
    s.add(Para(f"Error bars: sample standard deviation over {spread}; σΔ is the standard error of the "
               f"difference of the two means, sqrt(s₁²/n₁ + s₂²/n₂). Verdict: |Δ| ≤ σΔ no significant "
               f"difference; σΔ < |Δ| ≤ 2σΔ a hint; |Δ| > 2σΔ a gain or a loss. ↑: higher is better, ↓: lower "
               f"is better."))
    return s


def metrics_section(cells: dict, results: list[dict]) -> Section:
    s = Section("fractions", "Against the label fraction")
    s.add(Figure(figures.fraction_curves(cells), "test metrics against label fraction",
                 "Test ROC AUC, gluon rejection 1/εB at εS = 0.5 and mass MAE against the label fraction (log "
                 "scale), mean ± std over seeds, one line per mode.") if cells else None)
    for task in tasks.all_tasks():
        keys = sorted({(k[2], k[3]) for k in cells if k[1] == task.name},
                      key=lambda mf: (mode_rank(mf[0]), mf[1]))
        if not keys:
            continue
        names = task.report_metrics
        rows = [[mode, fmt_fraction(f)] + [fmt_agg(cells.get((n, task.name, mode, f)), m.fmt)
                                           for n, m in names.items()] for mode, f in keys]
        s.add(Table(["mode", "labels", *(m.label for m in names.values())], rows,
                    f"{task.title}: test split, mean ± std (n)"))
    s.add(Bullets([f"{m}: {MODE_LABEL[m]}" for m in order_modes({r["mode"] for r in results}) if m in MODE_LABEL]))
    return s


def classification_section(results: list[dict]) -> Section | None:
    """ROC curves and confusion matrices of every task whose results carry a ``classification`` section."""
    groups = [(t, [r for r in results if r.get("task") == t.name and r.get("classification")])
              for t in tasks.all_tasks() if t.section == "classification"]
    groups = [(t, rs) for t, rs in groups if rs]
    if not groups:
        return None
    s = Section("classification", "Classification: ROC and confusion")
    for task, cls in groups:
        which = f"{task.title}: " if len(groups) > 1 else ""
        s.add(Figure(figures.roc_panels(cls), f"{which}ROC curves",
                     "Gluon rejection 1/εB against quark efficiency εS (log y), the mean over seeds (count in the "
                     "legend), one panel per label fraction; dotted: a random classifier."))
        rows = []
        for f in sorted({float(r["label_fraction"]) for r in cls}):
            for mode in order_modes(result_mode(r) for r in cls):
                ms = [np.asarray(r["classification"]["confusion_matrix"], float) for r in cls
                      if result_mode(r) == mode and float(r["label_fraction"]) == f
                      and r["classification"].get("confusion_matrix")]
                if not ms:
                    continue
                m = np.sum(ms, axis=0)
                rate = m / np.maximum(m.sum(1, keepdims=True), 1)
                rows.append([mode, fmt_fraction(f), str(len(ms)), f"{rate[0, 0]:.1%}", f"{rate[0, 1]:.1%}",
                             f"{rate[1, 0]:.1%}", f"{rate[1, 1]:.1%}"])
        s.add(Table(["mode", "labels", "seeds", "gluon → gluon", "gluon → quark", "quark → gluon", "quark → quark"],
                    rows, f"{which}Confusion matrices at score 0.5 (rows: true class; summed over seeds, normalised "
                          f"per true class)"))
    return s


def _steps_table(steps, study_results) -> Table:
    rows = []
    groups: dict[tuple, list[dict]] = {}
    for r in study_results:
        labels = r.get("labels") or {}  # optional: labelled jets and which validation set was used
        groups.setdefault((r["task"], result_mode(r), float(r["label_fraction"])), []).append(
            {**(r.get("resources") or {}), "val_jets": labels.get("val_jets"), "validation": labels.get("validation")})
    for (task, mode, f), res in sorted(groups.items(), key=lambda kv: (kv[0][0], mode_rank(kv[0][1]), kv[0][2])):
        def mean(key, fmt, res=res):
            v = [x[key] for x in res if isinstance(x.get(key), (int, float))]
            return f"{np.mean(v):{fmt}}" if v else "—"
        rows.append([f"{task} {mode}", fmt_fraction(f), str(len(res)), mean("trainable_parameters", ",.0f"),
                     mean("total_parameters", ",.0f"), mean("train_jets", ",.0f"),
                     mean("val_jets", ",.0f") + "".join(f" ({v})" for v in sorted({str(x["validation"]) for x in res
                                                                                    if x.get("validation")})),
                     mean("peak_memory_mb", ",.0f"),
                     mean("train_seconds", ",.1f"), mean("train_jets_per_s", ",.0f"), mean("eval_jets_per_s", ",.0f"),
                     ", ".join(sorted({str(x.get("device")) for x in res}))])
    for st in steps:
        ep = (st.metrics or {}).get("epochs") or []
        secs = sum(e.get("seconds", 0) for e in ep)
        jps = [e["jets_per_s"] for e in ep if e.get("jets_per_s")]
        rows.insert(0, [f"pretrain {st.uri.rstrip('/').split('/')[-1]}", "unlabelled", "1", "—", "—", "—", "—", "—",
                        f"{secs:,.1f}", f"{np.mean(jps):,.0f}" if jps else "—", "—",
                        f"world size {st.run.get('world_size', '?')}"])
    return Table(["step", "labels", "runs", "trainable params", "total params", "train jets", "val jets",
                  "peak memory (MB)",
                  "train time (s)", "train jets/s", "eval jets/s", "device"], rows,
                 "Resources per step (means over seeds)")


def resources_section(study: Study, cells: dict) -> Section:
    s = Section("resources", "Resources and cost")
    s.add(_steps_table(study.pretrains, study.results))
    pre = sum(e.get("seconds", 0) for st in study.pretrains for e in ((st.metrics or {}).get("epochs") or []))
    tuned = sum((r.get("resources") or {}).get("train_seconds") or 0 for r in study.results)
    pretrained = sum((r.get("resources") or {}).get("train_seconds") or 0 for r in study.results
                     if r["mode"] in ("finetune", "linear"))
    text = (f"Cost of the study: {pre:,.0f} s of pretraining and {tuned:,.0f} s of supervised training "
            f"({pretrained:,.0f} s of it fine-tuning pretrained encoders), {pre + tuned:,.0f} s in all.")
    firsts = tuple(t.headline[0] for t in tasks.all_tasks() if t.headline)  # each task's main metric
    best = [c for c in comparisons(cells, firsts) if c.base == "scratch"]
    if best:
        c = max(best, key=lambda c: (c.gain / c.sigma) if c.sigma else -np.inf)
        text += (f" For that, the largest gain over scratch is {c.text()} in {METRICS[c.metric].label} at "
                 f"{fmt_fraction(c.fraction)} of the labels ({c.verdict}).")
    s.add(Para(text))
    return s


def provenance_section(study: Study, manifest: dict | None, dataset_uri: str | None) -> Section:
    s = Section("provenance", "Provenance")
    items = []
    if manifest:
        src = manifest.get("source", {})
        items.append(f"dataset {dataset_uri}: {manifest.get('name')} (id {manifest.get('id')}), ingested from "
                     f"{src.get('path')} (sha256 {src.get('sha256')})")
    for st in study.pretrains:
        r = st.run
        p = r.get("provenance") or {}
        items.append(f"pretraining {st.uri}: encoder sha256 {(r.get('encoder') or {}).get('sha256')}, jetlib "
                     f"{p.get('jetlib') or r.get('jetlib_version')}, git commit {p.get('git_commit') or '—'}, torch "
                     f"{(p.get('packages') or {}).get('torch') or r.get('torch')}, "
                     f"host {p.get('host') or r.get('host')}, device {p.get('device') or '—'}, "
                     f"world size {r.get('world_size')}, created {r.get('created')}")
    s.add(Bullets(items) if items else None)
    rows = []
    for r in sorted(study.results, key=lambda r: (r["task"], r["mode"], float(r["label_fraction"]),
                                                  str(r.get("seed")))):
        p = r.get("provenance") or {}
        origin = r.get("origin") or {}
        rows.append([r["_uri"].rsplit("/", 1)[-1], (r.get("model") or {}).get("sha256", "")[:12],
                     str((r.get("dataset") or {}).get("id")), (origin.get("encoder_sha256") or "—")[:12],
                     str(pretrain_seed(r) if pretrain_seed(r) is not None else "—"), str(p.get("jetlib") or "—"),
                     (p.get("git_commit") or "—")[:12], str(p.get("host") or "—"),
                     str(p.get("device") or (r.get("resources") or {}).get("device") or "—"),
                     str(p.get("created") or "—")])
    s.add(Table(["result", "model sha256", "dataset", "encoder sha256", "pretrain seed", "jetlib", "git commit",
                 "host", "device", "created"], rows, "Every result file") if rows else None)
    packages = {json.dumps((r.get("provenance") or {}).get("packages"), sort_keys=True) for r in study.results
                if (r.get("provenance") or {}).get("packages")}
    for pk in sorted(packages):
        s.add(Pre(", ".join(f"{k} {v}" for k, v in json.loads(pk).items()), "package versions"))
    by_mode: dict[tuple, list[dict]] = {}
    for r in study.results:
        by_mode.setdefault((r["task"], r["mode"]), []).append(r.get("config") or {})
    for st in study.pretrains:
        s.add(Pre(json.dumps(st.run.get("config"), indent=1, sort_keys=True), f"config of pretraining {st.uri}",
                  markdown=False))
    for (task, mode), cfgs in sorted(by_mode.items()):
        varies = sorted({k for c in cfgs for k in c if any(json.dumps(c.get(k)) != json.dumps(cfgs[0].get(k))
                                                          for c in cfgs)})
        note = f" (varies between runs: {', '.join(varies)})" if varies else ""
        s.add(Pre(json.dumps(cfgs[0], indent=1, sort_keys=True), f"config of {task} {mode}{note}", markdown=False))
    return s


def missing_section(lines: list[str]) -> Section:
    s = Section("missing", "What is missing")
    if lines:
        s.add(Para(f"{len(lines)} gap{'s' if len(lines) != 1 else ''} in this run:"), Bullets(lines))
    else:
        s.add(Para("Nothing: every (task, mode, label fraction, seed) combination found has a result, and every "
                   "step finished."))
    return s

