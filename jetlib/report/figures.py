"""The report's figures: matplotlib (Agg, no pyplot state) rendered to small PNG ``data:`` URIs.

Figures are small multiples rather than one figure per run, drawn at a modest DPI so
that the page of a full study stays well under the 2 MB the Kubeflow UI can take.
Every function returns a data URI, None when it has nothing to draw, or a
:class:`~jetlib.report.blocks.NotDrawn` saying why it could not draw what it had.

Labels are plain text. Method, folder and channel names come from records anyone can
write, so no label goes through matplotlib's mathtext (a ``$`` in a name would be parsed
as a formula, and a malformed one would stop the report): :func:`to_uri` turns
``parse_math`` off on every title, axis label, legend entry and annotation, and
shortens labels too long to read. Tick labels keep mathtext, which the log axes use.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import warnings

import numpy as np
from matplotlib.colors import LogNorm, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator, NullLocator

from jetlib.report.blocks import NotDrawn
from jetlib.report.stats import HEADLINE_METRICS, METRICS, fmt_fraction, mode_rank, order_modes, result_mode

COLORS = {"finetune": "#1f77b4", "linear": "#2ca02c", "scratch": "#d62728", "vgg": "#9467bd"}
CLASS_STYLE = {1: ("quark", "#1f77b4"), 0: ("gluon", "#d62728"), -1: ("all jets", "#555555")}
DPI = 80
MAX_COLS, MAX_ROWS = 24, 40  # panels: a real study has ~6 label fractions and ~10 (task, mode) rows
LABEL_CHARS = 80  # a longer line of a label is cut with "…": the figure's width is fixed
log = logging.getLogger(__name__)


class _TooManyPanels(Exception):
    pass


def _fig(ncols: int, nrows: int = 1, w: float = 3.2, h: float = 2.6) -> tuple[Figure, np.ndarray]:
    if ncols > MAX_COLS or nrows > MAX_ROWS:
        raise _TooManyPanels(f"{nrows} x {ncols} panels, more than the {MAX_ROWS} x {MAX_COLS} one figure shows; "
                             f"the tables hold the numbers")
    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def _drawn(draw):
    """``draw``'s data URI, or a NotDrawn with the reason when its data cannot be drawn: one figure the
    records do not allow (too many panels, a value matplotlib refuses) costs that figure, not the report."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        try:
            return draw(*args, **kwargs)
        except _TooManyPanels as e:
            return NotDrawn(str(e))
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
            log.warning("report: %s not drawn: %s: %s", draw.__name__, type(e).__name__, e)
            return NotDrawn(f"matplotlib cannot draw the recorded values ({type(e).__name__}: {str(e)[:200]})")
    return wrapper


def _plain(text: str) -> str:
    return "\n".join(line if len(line) <= LABEL_CHARS else line[: LABEL_CHARS - 1] + "…" for line in text.split("\n"))


def plain_labels(fig: Figure) -> None:
    """Every title, axis label, legend entry and annotation of ``fig`` drawn as plain text (no mathtext), each
    line at most LABEL_CHARS long. Tick labels are left alone: log axes write theirs in mathtext."""
    texts = list(fig.texts)
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            texts += [legend.get_title(), *legend.get_texts()]
    for t in texts:
        t.set_parse_math(False)
        t.set_text(_plain(t.get_text()))


def to_uri(fig: Figure, dpi: int = DPI) -> str:
    plain_labels(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _color(label: str) -> str:
    """The mode's colour; ``label`` may carry more words after the mode ("finetune 100% s0")."""
    return COLORS.get(label.split(" ")[0], "#7f7f7f")


def _fraction_axis(ax, fractions: list[float]) -> None:
    """Log-scaled label-fraction axis with one tick per fraction, written as a percentage."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(fractions))
    ax.xaxis.set_major_formatter(FixedFormatter([fmt_fraction(f) for f in fractions]))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(fractions) == 1:
        ax.set_xlim(fractions[0] / 2, fractions[0] * 2)


@_drawn
def fraction_curves(cells: dict, metrics=HEADLINE_METRICS) -> str | NotDrawn | None:
    """One panel per metric: mean ± std over seeds against label fraction (log x), one line per mode."""
    present = [m for m in metrics if any(k[0] == m and a.n for k, a in cells.items())]
    if not present:
        return None
    fig, axes = _fig(len(present), w=3.8, h=2.9)
    for ax, name in zip(axes[0], present, strict=True):
        label, higher = METRICS[name].label, METRICS[name].higher_is_better
        for mode in order_modes(k[2] for k in cells if k[0] == name):
            pts = sorted((k[3], a) for k, a in cells.items() if k[0] == name and k[2] == mode and a.n)
            if not pts:
                continue
            x = [p[0] for p in pts]
            y = [p[1].mean for p in pts]
            e = [p[1].std or 0.0 for p in pts]
            ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=3, color=_color(mode), label=mode)
        _fraction_axis(ax, sorted({k[3] for k in cells}))
        if name.startswith("rej"):
            ax.set_yscale("log")
        ax.set_xlabel("label fraction")
        ax.set_ylabel(label + (" ↑" if higher else " ↓"))
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    return to_uri(fig)


@_drawn
def roc_panels(results: list[dict]) -> str | NotDrawn | None:
    """1/εB against εS (log y), mean over seeds, one panel per label fraction, one line per mode (one task)."""
    cls = [r for r in results if (r.get("classification") or {}).get("roc")]
    fractions = sorted({float(r["label_fraction"]) for r in cls})
    if not fractions:
        return None
    fig, axes = _fig(len(fractions), w=3.0)
    for ax, f in zip(axes[0], fractions, strict=True):
        here = [r for r in cls if float(r["label_fraction"]) == f]
        for mode in order_modes(result_mode(r) for r in here):
            curves = [r["classification"]["roc"] for r in here if result_mode(r) == mode]
            tpr = np.asarray(curves[0]["tpr"])
            fpr = np.mean([np.interp(tpr, c["tpr"], c["fpr"]) for c in curves], axis=0)
            ok = (tpr >= 0.05) & (fpr > 0)
            ax.plot(tpr[ok], 1 / fpr[ok], color=_color(mode), label=f"{mode} ({len(curves)})")
        ax.plot([0.05, 1], [20, 1], alpha=0)  # keep a sane y range when a curve is empty
        e = np.linspace(0.05, 1, 50)
        ax.plot(e, 1 / e, ":", color="grey", lw=1, label="random")
        ax.set_yscale("log")
        ax.set_title(f"{fmt_fraction(f)} of labels", fontsize=10)
        ax.set_xlabel("εS (quark efficiency)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("1/εB (gluon rejection)")
    axes[0][0].legend(fontsize=7)
    return to_uri(fig)


def _epoch_axis(ax) -> None:
    """Whole-number epoch ticks; a single epoch gets one tick instead of matplotlib's ±0.05 padding."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    xs = [x for line in ax.get_lines() for x in line.get_xdata()]
    if xs and min(xs) == max(xs):
        ax.set_xlim(min(xs) - 0.5, min(xs) + 0.5)
        ax.xaxis.set_major_locator(FixedLocator([min(xs)]))


@_drawn
def pretrain_curves(steps: list) -> str | NotDrawn | None:
    """Loss, temperature, learning rate and k-NN accuracy per epoch for every pretraining run."""
    runs = [s for s in steps if s.metrics and s.metrics.get("epochs")]
    if not runs:
        return None
    keys = [("loss", "InfoNCE loss"), ("temperature", "temperature"), ("lr", "learning rate"),
            ("knn_accuracy", "k-NN accuracy (val)")]
    fig, axes = _fig(len(keys), w=2.8, h=2.3)
    for ax, (key, label) in zip(axes[0], keys, strict=True):
        for i, s in enumerate(runs):
            pts = [(e["epoch"], e[key]) for e in s.metrics["epochs"] if e.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=s.uri.rstrip("/").split("/")[-1], color=f"C{i}")
        ax.set_xlabel("epoch")
        _epoch_axis(ax)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:  # runs with no loss recorded leave the first panel empty
        axes[0][0].legend(fontsize=7)
    return to_uri(fig)


@_drawn
def training_curves(steps: list) -> str | NotDrawn | None:
    """Small multiples: one panel per (task, mode) row and label fraction column; train (solid) and
    validation (dashed) loss per epoch, one colour per seed."""
    runs = [s for s in steps if s.metrics and s.metrics.get("epochs")]
    if not runs:
        return None
    rows = sorted({(s.run["task"], s.run["mode"]) for s in runs},
                  key=lambda tm: (tm[0], mode_rank(tm[1])))
    cols = sorted({float(s.run["label_fraction"]) for s in runs})
    fig, axes = _fig(len(cols), len(rows), w=2.4, h=1.7)
    seeds = sorted({s.run.get("seed") for s in runs}, key=str)
    for s in runs:
        ax = axes[rows.index((s.run["task"], s.run["mode"]))][cols.index(float(s.run["label_fraction"]))]
        ep = s.metrics["epochs"]
        c = f"C{seeds.index(s.run.get('seed')) % 10}"
        ax.plot([e["epoch"] for e in ep], [e.get("train_loss") for e in ep], "-", marker=".", color=c, lw=1)
        ax.plot([e["epoch"] for e in ep], [e.get("val_loss") for e in ep], "--", marker=".", color=c, lw=1)
    for i, (task, mode) in enumerate(rows):
        axes[i][0].set_ylabel(f"{task} {mode}\nloss", fontsize=8)
    for j, f in enumerate(cols):
        axes[0][j].set_title(f"{fmt_fraction(f)} of labels", fontsize=9)
        axes[-1][j].set_xlabel("epoch", fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
    return to_uri(fig)


@_drawn
def mean_images(p, channel_names: list[str]) -> str | NotDrawn | None:
    """Mean quark and gluon image per channel (log colour) and their difference (symmetric log)."""
    classes = [c for c in (1, 0, -1) if c in p.mean_image]
    if not classes:
        return None
    diff = 1 in p.mean_image and 0 in p.mean_image
    rows = len(classes) + int(diff)
    n_ch = next(iter(p.mean_image.values())).shape[0]
    fig, axes = _fig(n_ch, rows, w=2.3, h=2.1)
    for j in range(n_ch):
        stack = np.stack([p.mean_image[c][j] for c in classes])
        pos = stack[stack > 0]
        norm = LogNorm(vmin=max(pos.min(), pos.max() * 1e-4), vmax=pos.max()) if pos.size else None
        for i, c in enumerate(classes):
            im = axes[i][j].imshow(np.where(stack[i] > 0, stack[i], np.nan), norm=norm, cmap="viridis")
            axes[i][0].set_ylabel(f"mean {CLASS_STYLE[c][0]}", fontsize=9)
        fig.colorbar(im, ax=[axes[i][j] for i in range(len(classes))], shrink=0.8)
        axes[0][j].set_title(channel_names[j] if j < len(channel_names) else f"channel {j}", fontsize=10)
        if diff:
            d = p.mean_image[1][j] - p.mean_image[0][j]
            lim = float(np.abs(d).max()) or 1.0
            im = axes[-1][j].imshow(d, cmap="RdBu_r", norm=SymLogNorm(lim * 1e-3, vmin=-lim, vmax=lim))
            fig.colorbar(im, ax=axes[-1][j], shrink=0.8)
            axes[-1][0].set_ylabel("quark − gluon", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return to_uri(fig)


@_drawn
def distributions(p) -> str | NotDrawn | None:
    """Jet mass, pT and pixel occupancy by class (normalised histograms)."""
    panels = [(p.m0, "jet mass m0 (GeV)"), (p.pt, "jet pT (GeV)"), (p.occupancy, "non-zero pixels per jet")]
    panels = [(d, label) for d, label in panels if d]
    if not panels:
        return None
    fig, axes = _fig(len(panels), w=3.0, h=2.3)
    for ax, (data, label) in zip(axes[0], panels, strict=True):
        allv = np.concatenate(list(data.values()))
        bins = np.histogram_bin_edges(allv, bins=30)
        for c in sorted(data, reverse=True):
            name, color = CLASS_STYLE[c]
            ax.hist(data[c], bins=bins, histtype="step", density=True, color=color, label=f"{name} ({len(data[c])})")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return to_uri(fig)


@_drawn
def activation_maps(examples: list, maps: dict[str, dict[str, np.ndarray]], stages: list[str]) -> str | NotDrawn | None:
    """Rows: test jets; columns: the input (summed channels, log) then, for each encoder, its stages."""
    if not examples or not maps:
        return None
    encoders = list(maps)
    ncols = 1 + len(encoders) * len(stages)
    fig, axes = _fig(ncols, len(examples), w=1.45, h=1.5)
    for i, (cls, x) in enumerate(examples):
        img = x.sum(0)
        pos = img[img > 0]
        norm = LogNorm(vmin=max(pos.min(), pos.max() * 1e-3), vmax=pos.max()) if pos.size else None
        axes[i][0].imshow(np.where(img > 0, img, np.nan), norm=norm, cmap="viridis")
        axes[i][0].set_ylabel(CLASS_STYLE[cls][0], fontsize=9)
        for e, enc in enumerate(encoders):
            for s, stage in enumerate(stages):
                ax = axes[i][1 + e * len(stages) + s]
                ax.imshow(maps[enc][stage][i], cmap="magma", vmin=0, vmax=1)
                if i == 0:
                    ax.set_title(f"{enc}\n{stage}", fontsize=8)
    axes[0][0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return to_uri(fig)


@_drawn
def regression_panels(preds: dict[str, dict[str, np.ndarray]], results: list[dict]) -> str | NotDrawn | None:
    """Per mode, predicted vs true mass (2-D histogram); then residuals, bias and resolution vs true mass."""
    reg = [r for r in results if r.get("regression")]  # one task's results
    if not preds and not reg:
        return None
    modes = order_modes(preds)
    fig, axes = _fig(len(modes) + 3, w=2.9, h=2.6)
    lo_hi = [np.percentile(np.concatenate([p["true"], p["pred"]]), [0.5, 99.5]) for p in preds.values()]
    lo, hi = (min(a for a, _ in lo_hi), max(b for _, b in lo_hi)) if lo_hi else (0, 1)
    for ax, mode in zip(axes[0], modes, strict=False):
        p = preds[mode]
        # empty cells stay white (cmin), so a model that predicts one value shows as one line, not a wash
        ax.hist2d(p["true"], p["pred"], bins=40, range=[[lo, hi], [lo, hi]], cmap="viridis", cmin=1,
                  norm=LogNorm(vmin=1))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
        ax.set_title(f"{mode} ({len(p['true'])} jets)", fontsize=10)
        ax.set_xlabel("true mass (GeV)")
        ax.set_ylabel("predicted mass (GeV)")
    ax_res, ax_bias, ax_sig = axes[0][len(modes):]
    for mode in modes:
        p = preds[mode]
        ax_res.hist(p["pred"] - p["true"], bins=40, histtype="step", color=_color(mode), label=mode, density=True)
        edges = np.unique(np.quantile(p["true"], np.linspace(0, 1, 9)))
        which = np.clip(np.searchsorted(edges, p["true"], side="right") - 1, 0, len(edges) - 2)
        centre, sig = [], []
        for b in range(len(edges) - 1):
            sel = which == b
            if sel.sum() > 1:
                rel = (p["pred"][sel] - p["true"][sel]) / np.maximum(p["true"][sel], 1e-9)
                q16, q84 = np.percentile(rel, [16, 84])
                centre.append(p["true"][sel].mean())
                sig.append((q84 - q16) / 2)
        ax_sig.plot(centre, sig, marker="o", ms=3, color=_color(mode), label=mode)
    for mode in order_modes(result_mode(r) for r in reg):
        runs = [r["regression"]["bias_in_bins"] for r in reg
                if result_mode(r) == mode and r["regression"].get("bias_in_bins")]
        if not runs:
            continue
        k = min(len(b) for b in runs)
        x = np.mean([[b[i]["true_mean"] for i in range(k)] for b in runs], axis=0)
        # an undefined bin (null) is left out of its mean rather than read as zero
        y = np.array([[b[i].get("relative_bias") for i in range(k)] for b in runs], dtype=float)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(y, 0), np.nanstd(y, 0, ddof=1) if len(runs) > 1 else None
        ax_bias.errorbar(x, mean, yerr=std, marker="o", ms=3,
                         capsize=2, color=_color(mode), label=f"{mode} ({len(runs)})")
    ax_bias.axhline(0, color="k", lw=0.8)
    ax_res.set_xlabel("predicted − true mass (GeV)")
    ax_bias.set_xlabel("true mass (GeV)")
    ax_bias.set_ylabel("mean (pred − true)/true")
    ax_sig.set_xlabel("true mass (GeV)")
    ax_sig.set_ylabel("resolution (half 68% width)")
    for ax in (ax_res, ax_bias, ax_sig):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return to_uri(fig)


# how each trial state is drawn in a search's plot: (marker, face colour, edge colour, legend label)
TRIAL_STYLE = {"complete": ("o", "#1f77b4", "#1f77b4", "complete"),
               "pruned": ("o", "none", "#ff7f0e", "pruned (last epoch)"),
               "fail": ("x", "#d62728", "#d62728", "failed")}


@_drawn
def search_panels(searches: dict[str, tuple[list[tuple[int, str, float | None]], int | None]],
                  objective: str = "validation k-NN accuracy") -> str | NotDrawn | None:
    """One panel per method: each trial's final objective against its number, by state; the best-so-far of the
    complete trials (a step line); the trial whose values the recipe took (a star).

    ``searches``: method -> ([(trial number, state, final value or None)], chosen trial number or None). A
    trial without a value (failed before its first epoch) is a cross on the panel's floor."""
    drawn = {m: (pts, best) for m, (pts, best) in searches.items() if pts}
    if not drawn:
        return None
    ncols = min(len(drawn), 4)
    fig, axes = _fig(ncols, -(-len(drawn) // ncols), w=3.4, h=2.6)
    for ax in axes.flat[len(drawn):]:
        ax.set_visible(False)
    for ax, (method, (pts, best)) in zip(axes.flat, drawn.items(), strict=False):
        floor = ax.get_xaxis_transform()  # x in data, y in axes fraction
        for state, (marker, face, edge, label) in TRIAL_STYLE.items():
            here = [(n, v) for n, s, v in pts if s == state]
            style = {"color": edge} if marker == "x" else {"facecolors": face, "edgecolors": edge}  # x: no face
            valued = [(n, v) for n, v in here if v is not None]
            if valued:
                ax.scatter(*zip(*valued, strict=True), marker=marker, s=22, label=f"{label} ({len(here)})", zorder=3,
                           **style)
            bare = [n for n, v in here if v is None]
            if bare:
                ax.scatter(bare, [0.03] * len(bare), marker=marker, s=22, transform=floor, zorder=3,
                           label=None if valued else f"{label} ({len(here)})", **style)
        numbers = [n for n, _, _ in pts]
        done = sorted((n, v) for n, s, v in pts if s == "complete" and v is not None)
        if done:  # drawn on to the last trial: the best a search of that many trials had found
            ax.step([n for n, _ in done] + [max(numbers)], list(np.maximum.accumulate([v for _, v in done]))
                    + [max(v for _, v in done)], where="post", color="k", lw=1, label="best so far")
        chosen = [(n, v) for n, s, v in pts if n == best and v is not None]
        if chosen:
            ax.scatter(*zip(*chosen, strict=True), marker="*", s=120, facecolors="gold", edgecolors="k",
                       label=f"chosen (trial {best})", zorder=4)
        ax.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
        if all(v is None for _, _, v in pts):
            ax.set_ylim(0, 1)
        ax.set_title(method, fontsize=10)
        ax.set_xlabel("trial")
        ax.set_ylabel(objective)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return to_uri(fig)
