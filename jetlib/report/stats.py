"""Numbers of the report: means and spreads over seeds, comparisons, and the verdict wording.

Every number on the page comes from here, and so does every sentence of the headline:
the wording is a function of the statistics, never fixed prose.

Methods. A pretrained result (``finetune``, ``linear``) belongs to the pretraining method of its
encoder, ``origin.method`` (absent on results written before methods were a choice: SimCLR).
Its cell's mode is the mode for SimCLR and ``<mode>_<method>`` for any other method
(``finetune_vicreg``), so SimCLR's cells, sentences and ``summary.json`` keys are those of a
study without methods and every other method has its own (``cls_auc_finetune_vicreg_f0.1_mean``,
``cls_auc_gain_finetune_vicreg_vs_scratch_f0.1``). Scratch and VGG are method-free.

Spread. For each (task, mode, label fraction) the results of all seeds are pooled: the
fine-tuning seeds and, when results come from several pretraining runs (told apart by
``origin.pretrain_seed``, else ``origin.encoder_sha256``), the pretraining runs too.
``std`` is the sample standard deviation (ddof = 1) of that pool; with one result it is
undefined. A comparison of two modes uses the difference
of their means, ``delta``, and its standard error ``sigma = sqrt(s_a^2/n_a + s_b^2/n_b)``.

Verdict (``delta`` signed so that positive means the pretrained encoder is better):
``|delta| <= sigma``: no significant difference; ``sigma < |delta| <= 2 sigma``: a hint of
a gain (or loss); ``|delta| > 2 sigma``: a gain (or loss). With one seed on either side
there is no spread and the verdict says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from jetlib import methods, tasks

# short name -> Metric(key in result["scalars"], label, higher is better, format) of every registered
# task, and the ones the headline compares: read from jetlib.tasks at each use
METRICS = tasks.METRICS
HEADLINE_METRICS = tasks.HEADLINE
MODE_ORDER = ("finetune", "linear", "scratch", "vgg")
MODE_LABEL = {"finetune": "fine-tuned (pretrained)", "linear": "linear probe (pretrained, frozen)",
              "scratch": "same network from scratch", "vgg": "VGG + SE baseline"}
PRETRAINED = ("finetune", "linear")
BASELINES = ("scratch", "vgg")
DEFAULT_METHOD = methods.DEFAULT_METHOD  # the only pretraining before methods were a choice: keeps the bare mode


def fmt_fraction(f: float) -> str:
    return f"{f:.0%}" if f * 100 == round(f * 100) else f"{f:.2%}"


def fmt_number(value, fmt: str) -> str:
    """``value`` in ``fmt``, or "—" when it is not a number (null: a non-finite value written as JSON)."""
    return f"{value:{fmt}}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def method_of(result: dict) -> str | None:
    """The pretraining method of a pretrained result's encoder (SimCLR when unrecorded); None for scratch, VGG."""
    if result.get("mode") not in PRETRAINED:
        return None
    origin = result.get("origin") or {}
    method = origin.get("method") if isinstance(origin, dict) else None
    return method if isinstance(method, str) and method else DEFAULT_METHOD


def cell_mode(mode: str, method: str | None) -> str:
    """A cell's mode: ``mode`` for SimCLR and the method-free modes, else ``<mode>_<method>``."""
    return mode if method in (None, DEFAULT_METHOD) or mode not in PRETRAINED else f"{mode}_{method}"


def result_mode(result: dict) -> str:
    """The cell mode of one result (:func:`cell_mode` of its mode and method): what every per-mode table,
    curve and panel groups by, so that two methods' fine-tuned results never pool."""
    return cell_mode(result["mode"], method_of(result))


def split_mode(mode: str) -> tuple[str, str | None]:
    """(mode, method) of a cell's mode: the inverse of :func:`cell_mode` (None for a method-free mode)."""
    base, _, method = mode.partition("_")
    if base in PRETRAINED:
        return base, method or DEFAULT_METHOD
    return mode, None


def mode_rank(mode: str) -> tuple[int, str]:
    """Sort key: finetune (SimCLR, then other methods by name), linear (likewise), scratch, vgg, then by name."""
    base, method = split_mode(mode)
    if base not in MODE_ORDER:
        return (99, mode)
    return (MODE_ORDER.index(base), "" if method in (None, DEFAULT_METHOD) else method)


def order_modes(modes) -> list[str]:
    return sorted(set(modes), key=mode_rank)


def pretrain_seed(result: dict):
    origin = result.get("origin") or {}
    return origin.get("pretrain_seed") if isinstance(origin, dict) else None


def pretrain_id(result: dict):
    """Which pretraining run a result started from: its seed (``<method>-s<seed>`` for a method other than
    SimCLR, whose seeds are other runs), else its encoder's sha256 prefix, else None."""
    seed = pretrain_seed(result)
    if seed is not None:
        method = method_of(result)
        return seed if method in (None, DEFAULT_METHOD) else f"{method}-s{seed}"
    origin = result.get("origin") or {}
    sha = origin.get("encoder_sha256") if isinstance(origin, dict) else None
    return sha[:8] if sha else None


def undefined_reason(result: dict, key: str) -> str:
    """Why a scalar is null or not finite, from whatever the result file says."""
    parts = [result.get(section) or {} for section in tasks.sections()]
    # jetlib.metrics puts {metric: reason} under "undefined" of its section; older or other writers may not
    for where in (*(p.get("undefined") for p in parts if isinstance(p, dict)), result.get("undefined"),
                  result.get("reasons")):
        if isinstance(where, dict) and where.get(key):
            return str(where[key])
    value = (result.get("scalars") or {}).get(key)
    if isinstance(value, float) and math.isinf(value):
        return "no background jet passes the cut" if key.startswith("rejection") else "infinite"
    return "not defined for this run"


@dataclass
class Agg:
    """One (task, mode, fraction) cell of a metric, over seeds."""

    values: list[float] = field(default_factory=list)  # finite values, one per result
    seeds: list[tuple] = field(default_factory=list)  # (pretrain seed or None, seed) per value
    undefined: list[str] = field(default_factory=list)  # "seed 1: reason" for null / non-finite values

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else None


def aggregate(results: list[dict]) -> dict[tuple[str, str, str, float], Agg]:
    """{(metric, task, mode, fraction): Agg} over every result file; ``mode`` is :func:`cell_mode`'s."""
    cells: dict[tuple[str, str, str, float], Agg] = {}
    for r in results:
        task = r.get("task")
        mode = result_mode(r)
        for name, metric in (tasks.get(task).report_metrics if task in tasks.TASKS else {}).items():
            key = metric.key
            cell = cells.setdefault((name, task, mode, float(r["label_fraction"])), Agg())
            value = (r.get("scalars") or {}).get(key)
            seed = (pretrain_id(r), r.get("seed"))
            if isinstance(value, (int, float)) and math.isfinite(value):
                cell.values.append(float(value))
                cell.seeds.append(seed)
            else:
                cell.undefined.append(f"seed {r.get('seed')}: {undefined_reason(r, key)}")
    return cells


def spread_source(results: list[dict]) -> str:
    """Which seeds the error bars are over, in words."""
    seeds = {r.get("seed") for r in results}
    runs: dict[str, set] = {}  # method -> its pretraining runs: a cell pools one method's only
    for r in results:
        if r.get("mode") in PRETRAINED and pretrain_id(r) is not None:
            runs.setdefault(method_of(r), set()).add(pretrain_id(r))
    pseeds = max((len(v) for v in runs.values()), default=0)
    text = f"{len(seeds)} fine-tuning seed{'s' if len(seeds) != 1 else ''}"
    if pseeds > 1:
        text += f" and {pseeds} pretraining runs{' per method' if len(runs) > 1 else ''} (pretrained modes pool both)"
    return text


@dataclass
class Comparison:
    metric: str
    fraction: float
    mode: str  # the pretrained mode
    base: str  # the baseline it is compared with
    a: Agg
    b: Agg
    task: str = ""  # the task of both cells

    @property
    def gain(self) -> float:
        """Difference of means, positive when the pretrained mode is better."""
        higher = METRICS[self.metric].higher_is_better
        delta = self.a.mean - self.b.mean
        return delta if higher else -delta

    @property
    def sigma(self) -> float | None:
        if self.a.std is None or self.b.std is None:
            return None
        return math.sqrt(self.a.std**2 / self.a.n + self.b.std**2 / self.b.n)

    @property
    def verdict(self) -> str:
        """One of: gain, hint of a gain, no significant difference, hint of a loss, loss, no error bar."""
        sigma = self.sigma
        if sigma is None:
            return "no error bar"
        if abs(self.gain) <= sigma:
            return "no significant difference"
        word = "gain" if self.gain > 0 else "loss"
        return word if abs(self.gain) > 2 * sigma else f"hint of a {word}"

    def text(self) -> str:
        fmt = METRICS[self.metric].fmt
        sigma = self.sigma
        delta = self.a.mean - self.b.mean
        return f"{delta:+{fmt}}" + (f" ± {sigma:{fmt}}" if sigma is not None else " (one seed, no error bar)")


def comparisons(cells: dict, metrics=HEADLINE_METRICS, modes=("finetune",)) -> list[Comparison]:
    """Every (metric, fraction, pretrained mode, baseline) pair for which both sides have values."""
    out = []
    rank = {m: i for i, m in enumerate(metrics)}
    for (name, _task, mode, fraction), a in sorted(cells.items(), key=lambda kv: (rank.get(kv[0][0], 99), kv[0][3])):
        if name not in metrics or mode not in modes or not a.n:
            continue
        for base in BASELINES:
            b = cells.get((name, _task, base, fraction))
            if b is not None and b.n:
                out.append(Comparison(name, fraction, mode, base, a, b, _task))
    return out


def _fractions(cs: list[Comparison]) -> str:
    items = [fmt_fraction(c.fraction) for c in cs]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def headline(cells: dict) -> list[str]:
    """The headline sentences, one per (metric, baseline), worded from the verdicts."""
    return sentences(comparisons(cells), "fine-tuned pretrained encoder")


def sentences(cs: list[Comparison], who: str) -> list[str]:
    """One sentence per (metric, baseline) of the comparisons ``cs``, worded from their verdicts; ``who`` names
    the pretrained side ("fine-tuned pretrained encoder")."""
    out = []
    for name in HEADLINE_METRICS:
        label, higher = METRICS[name].label, METRICS[name].higher_is_better
        for base in BASELINES:
            group = [c for c in cs if c.metric == name and c.base == base]
            if not group:
                continue
            parts = []
            for verdict, phrase in VERDICT_PHRASES.items():
                sel = [c for c in group if c.verdict == verdict]
                if not sel:
                    continue
                nums = "; ".join(f"Δ = {c.text()}" + (f" at {fmt_fraction(c.fraction)}" if len(sel) > 1 else "")
                                 for c in sel)
                parts.append(f"{phrase} at {_fractions(sel)} of the labels ({nums})")
            better = "higher" if higher else "lower"
            out.append(f"{label} ({better} is better), {who} vs the {MODE_LABEL[base]}: " + "; ".join(parts) + ".")
    return out


def overview(cells: dict) -> str:
    """One sentence counting the verdicts of every headline comparison."""
    cs = comparisons(cells)
    counts = {v: sum(c.verdict == v for c in cs) for v in VERDICT_PHRASES}
    words = {"gain": "helps", "hint of a gain": "hints at a gain",
             "no significant difference": "makes no significant difference", "hint of a loss": "hints at a loss",
             "loss": "is a loss", "no error bar": "cannot be judged (one seed)"}
    parts = [f"{words[v]} in {n}" for v, n in counts.items() if n]
    return f"In short, over {len(cs)} comparisons (metric × label fraction × baseline), pretraining " + \
        ", ".join(parts) + "."


VERDICT_PHRASES = {
    "gain": "pretraining helps",
    "hint of a gain": "a hint of a gain (1–2σ)",
    "no significant difference": "no significant difference",
    "hint of a loss": "a hint of a loss (1–2σ)",
    "loss": "pretraining is a loss",
    "no error bar": "not judged, one seed only",
}


def summary(cells: dict) -> dict[str, float]:
    """Flat, stable keys for the Kubeflow UI: ``<task>_<metric>_<mode>_f<fraction>_<mean|std>`` and gains."""
    out: dict[str, float] = {}
    for (name, task, mode, fraction), agg in sorted(cells.items()):
        stem = f"{task}_{name}_{mode}_f{fraction:g}"
        for stat in ("mean", "std"):
            value = getattr(agg, stat)
            if value is not None and math.isfinite(value):
                out[f"{stem}_{stat}"] = float(value)
        if agg.n:
            out[f"{stem}_n"] = float(agg.n)
    tuned = {m for (_, _, m, _) in cells if split_mode(m)[0] == "finetune"}  # SimCLR's and every other method's
    for c in comparisons(cells, modes=tuned):
        stem = f"{c.task}_{c.metric}_gain_{c.mode}_vs_{c.base}_f{c.fraction:g}"
        out[stem] = float(c.gain)
        if c.sigma is not None and math.isfinite(c.sigma):
            out[f"{stem}_sigma"] = float(c.sigma)
    return out
