"""The report's "Which pretraining?": every pretraining method against scratch and VGG, and collapse per run.

A study may pretrain with several methods (:mod:`jetlib.methods`: SimCLR, VICReg, Barlow
Twins, BYOL); each pretrained result belongs to its encoder's method
(:func:`jetlib.report.stats.method_of`) and has its own cells. This section puts them side
by side per label fraction (the headline metrics, mean ± std over fine-tuning × pretraining
seeds), words each comparison with :class:`~jetlib.report.stats.Comparison`'s verdict (the
headline's rule, not a second one), and lists every pretraining run's final embedding
statistics (:func:`jetlib.monitor.embedding_stats`, recorded in its ``run.json``) so a
collapsed encoder is named next to the numbers it produced.

With SimCLR as the only method the comparisons are the headline's and are not repeated;
the collapse table is still shown.
"""

from __future__ import annotations

from jetlib import monitor
from jetlib.report.blocks import Bullets, Para, Section, Table
from jetlib.report.collect import Step, Study
from jetlib.report.sections import fmt_agg
from jetlib.report.stats import (
    BASELINES,
    DEFAULT_METHOD,
    HEADLINE_METRICS,
    METRICS,
    MODE_LABEL,
    PRETRAINED,
    cell_mode,
    comparisons,
    fmt_fraction,
    fmt_number,
    sentences,
    split_mode,
)


def methods_in(cells: dict, study: Study) -> list[str]:
    """The pretraining methods of the study's pretrained cells and pretraining runs, SimCLR first, then by name."""
    found = {split_mode(mode)[1] for (_, _, mode, _) in cells} | {run_method(st) for st in study.pretrains}
    found.discard(None)
    return sorted(found, key=lambda m: (m != DEFAULT_METHOD, m))


def run_method(step: Step) -> str:
    """The method a pretraining run.json records (``method.name``, else ``config.method``; SimCLR if neither)."""
    run = step.run or {}
    method = run.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    name = name or (run.get("config") or {}).get("method")
    return name if isinstance(name, str) and name else DEFAULT_METHOD


def pretraining_section(study: Study, cells: dict, spread: str) -> Section | None:
    """"Which pretraining?", or None when the study holds neither a pretrained result nor a pretraining run."""
    methods = methods_in(cells, study)
    if not methods:
        return None
    s = Section("pretraining", "Which pretraining?")
    if methods == [DEFAULT_METHOD]:
        s.add(Para(f"One pretraining method in this study ({DEFAULT_METHOD}): its comparisons with scratch and VGG "
                   f"are the headline's."))
    else:
        _compare(s, cells, methods, spread)
    s.add(*_collapse(study))
    return s


def _compare(s: Section, cells: dict, methods: list[str], spread: str) -> None:
    s.add(Para(f"{len(methods)} pretraining methods ({', '.join(methods)}), each fine-tuned on the same labels as "
               f"the baselines. Error bars: sample standard deviation over {spread}; each method's cells pool its "
               f"own pretraining runs only."))
    for method in methods:
        cs = comparisons(cells, modes=(cell_mode("finetune", method),))
        s.add(Bullets(sentences(cs, f"fine-tuned {method} encoder")) if cs else None)
    rows = []
    fractions = sorted({k[3] for k in cells})
    for name in HEADLINE_METRICS:
        m = METRICS[name]
        for f in fractions:
            row = {base: cells.get(_key(cells, name, base, f)) for base in BASELINES}
            row |= {method: cells.get(_key(cells, name, cell_mode("finetune", method), f)) for method in methods}
            filled = {k: a for k, a in row.items() if a is not None and a.n}
            if not any(k in methods for k in filled):
                continue
            best = (max if m.higher_is_better else min)(filled, key=lambda k: filled[k].mean)
            rows.append([m.label + (" ↑" if m.higher_is_better else " ↓"), fmt_fraction(f),
                         *(fmt_agg(row[k], m.fmt) for k in (*BASELINES, *methods)), best])
    s.add(Table(["metric", "labels", *BASELINES, *(f"{m} (fine-tuned)" for m in methods), "best mean"], rows,
                "Every method against scratch and VGG: test split, mean ± std (n)") if rows else None)
    rows = []
    for method in methods:
        for c in comparisons(cells, modes=[cell_mode(mode, method) for mode in PRETRAINED]):
            m = METRICS[c.metric]
            rows.append([method, split_mode(c.mode)[0], m.label + (" ↑" if m.higher_is_better else " ↓"),
                         fmt_fraction(c.fraction), fmt_agg(c.a, m.fmt), MODE_LABEL[c.base], fmt_agg(c.b, m.fmt),
                         c.text(), f"{abs(c.gain) / c.sigma:.1f}σ" if c.sigma else "—", c.verdict])
    s.add(Table(["method", "mode", "metric", "labels", "pretrained: mean ± std (n)", "compared with",
                 "baseline: mean ± std (n)", "Δ (pretrained − baseline) ± σΔ", "|Δ|/σΔ", "verdict"], rows,
                "Each method's fine-tuned and linear-probe results against each baseline (the headline's verdict "
                "rule)") if rows else None)


def _key(cells: dict, name: str, mode: str, fraction: float) -> tuple | None:
    """The cell of (metric, mode, fraction), whichever task the metric belongs to."""
    return next((k for k in cells if k[0] == name and k[2] == mode and k[3] == fraction), None)


def _collapse(study: Study) -> list:
    rows, collapsed = [], []
    for st in sorted(study.pretrains, key=lambda st: (run_method(st), str((st.run.get("config") or {}).get("seed")),
                                                       st.uri)):
        final = st.run.get("final") or {}
        emb = final.get("embedding") if isinstance(final.get("embedding"), dict) else None
        epochs = [e.get("epoch") for e in ((st.metrics or {}).get("epochs") or [])
                  if isinstance(e.get("embedding"), dict) and e["embedding"].get("collapsed")]
        name = st.uri.rstrip("/").rsplit("/", 1)[-1]
        if st.run.get("collapse") or (emb or {}).get("collapsed"):
            collapsed.append(name)
        verdict = "not measured" if emb is None else "yes" if emb.get("collapsed") else "no"
        emb = emb or {}
        rows.append([name, run_method(st), str((st.run.get("config") or {}).get("seed", "—")),
                     str(final.get("epoch", "—")), fmt_number(final.get("loss"), ".4g"),
                     fmt_number(emb.get("std_mean"), ".4f"), fmt_number(emb.get("std_min"), ".4f"),
                     fmt_number(emb.get("effective_rank"), ".1f"), verdict, ", ".join(map(str, epochs)) or "—"])
    if not rows:
        return []
    if collapsed:
        text = (f"{len(collapsed)} of {len(rows)} pretraining runs ended with a collapsed embedding "
                f"({', '.join(collapsed)}): encoders unlikely to help fine-tuning; the tables above say whether "
                f"they did.")
    else:
        text = f"No pretraining run ended with a collapsed embedding ({len(rows)} runs)."
    return [Para(text, strong=bool(collapsed)),
            Table(["pretraining run", "method", "seed", "final epoch", "final loss", "std (mean)", "std (min)",
                   "effective rank", "collapsed", "epochs collapsed"], rows,
                  "Collapse diagnostics of the encoder's normalised features on validation jets, final epoch "
                  f"(jetlib.monitor.embedding_stats: collapsed when the mean per-dimension std is under "
                  f"{monitor.STD_FRACTION:g}/√D or the effective rank under max({monitor.MIN_RANK:g}, "
                  f"{monitor.RANK_FRACTION:g} D))")]
