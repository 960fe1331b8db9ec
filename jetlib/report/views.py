"""The pictures sections of the report: learning curves, the data, the encoder's view, regression.

These read the test split and stored networks (through :mod:`jetlib.report.inference`).
A part that cannot be drawn (dataset not reachable, a model file gone) becomes a line in
"What is missing", never a crash: the rest of the report is still worth reading.
"""

from __future__ import annotations

import logging

import numpy as np

from jetlib import tasks
from jetlib.data.manifest import Dataset, format_manifest
from jetlib.errors import JetlibError
from jetlib.report import figures, inference
from jetlib.report.blocks import Figure, Para, Pre, Section, Table
from jetlib.report.collect import Study
from jetlib.report.stats import fmt_fraction, fmt_number, order_modes, result_mode

log = logging.getLogger(__name__)
# a stored network the report cannot rebuild: a refused record, a blob with missing or mistyped fields, weights
# that do not fit the recorded network
UNLOADABLE = (JetlibError, KeyError, RuntimeError, TypeError, ValueError)


def pick_stages(maps: dict[str, np.ndarray], count: int = 4) -> list[str]:
    """Up to ``count`` stages, evenly spread from the stem to the last one still at least 3 pixels wide."""
    usable = [name for name, m in maps.items() if min(m.shape[-2:]) >= 3] or list(maps)[:1]
    if len(usable) <= count:
        return usable
    return [usable[round(i * (len(usable) - 1) / (count - 1))] for i in range(count)]


def learning_section(study: Study) -> Section:
    s = Section("learning", "Learning curves")
    s.add(Figure(figures.pretrain_curves(study.pretrains), "pretraining curves",
                 "Each pretraining per epoch: its method's loss, the temperature (SimCLR), the learning rate, and "
                 "the k-NN quark/gluon accuracy of the embedding on the validation split (the monitor)."))
    rows = []
    for st in study.pretrains:
        ep = (st.metrics or {}).get("epochs") or []
        last = ep[-1] if ep else {}
        rows.append([st.uri, str(len(ep)), fmt_number(last.get("loss"), ".4f"),
                     fmt_number(last.get("temperature"), ".4f"), fmt_number(last.get("knn_accuracy"), ".3f")])
    if rows:
        s.add(Table(["pretraining run", "epochs", "final loss", "final temperature", "final k-NN accuracy"], rows))
    s.add(Figure(figures.training_curves(study.trainings), "fine-tuning curves",
                 "Every supervised training run: train loss (solid) and validation loss (dashed) per epoch; one "
                 "colour per seed; rows are task and mode, columns the label fraction."))
    return s


def data_section(ds: Dataset | None, portrait, notes: list[str]) -> Section:
    s = Section("data", "The data")
    if ds is None:
        s.add(Para("The dataset could not be opened: see What is missing."))
        return s
    s.add(Pre(format_manifest(ds), "dataset card (from the manifest)"))
    if portrait is None:
        return s
    names = ds.manifest["image"].get("channel_names", [])
    s.add(Figure(figures.mean_images(portrait, names), "mean jet images",
                 f"Mean image per channel over {portrait.jets:,} test jets, by class (log colour scale), and "
                 f"mean quark minus mean gluon (symmetric log: red where quarks deposit more)."))
    s.add(Figure(figures.distributions(portrait), "jet mass, pT and occupancy by class",
                 "Test-split distributions by class, normalised to unit area (counts in the legend)."))
    return s


def encoder_section(study: Study, ds: Dataset | None, portrait, notes: list[str]) -> Section | None:
    if ds is None or portrait is None or not portrait.examples:
        return None
    sources = {}
    if study.pretrains:
        sources["pretrained"] = study.pretrains[0].uri
    scratch = [st for st in study.trainings if st.run.get("mode") == "scratch"]
    if scratch:
        # the most labels, the first seed: the scratch network with the best chance of a sharp view
        best = max(scratch, key=lambda st: (float(st.run["label_fraction"]), -int(st.run.get("seed") or 0)))
        sources[f"scratch {fmt_fraction(float(best.run['label_fraction']))}"] = best.uri
    maps = {}
    x = np.stack([e[1] for e in portrait.examples])
    for name, uri in sources.items():
        try:
            enc, normalize = inference.encoder_from(uri, pretraining=name == "pretrained")
        except UNLOADABLE as e:
            notes.append(f"activation maps of {uri}: cannot load the encoder ({e})")
            continue
        scale = ds.channel_scale() if normalize == "scale" else None
        maps[name] = inference.stage_activations(enc, x, scale)
    if not maps:
        return None
    stages = pick_stages(next(iter(maps.values())))
    s = Section("encoder", "What the encoder looks at")
    s.add(Figure(figures.activation_maps(portrait.examples, maps, stages), "encoder activation maps",
                 "For a few test jets (input: all channels summed, log colour), the mean absolute activation after "
                 "the stem and residual blocks (forward hooks), each map scaled to its maximum: the pretrained "
                 "encoder next to one trained from scratch. Sources: "
                 + "; ".join(f"{k}: {v}" for k, v in sources.items() if k in maps) + "."))
    return s


def regression_section(study: Study, ds: Dataset | None, notes: list[str]) -> Section | None:
    """Predicted against true values, per task whose results carry a ``regression`` section."""
    groups = [(t, [r for r in study.results if r.get("task") == t.name]) for t in tasks.all_tasks()
              if t.section == "regression"]
    groups = [(t, rs) for t, rs in groups if rs]
    if not groups:
        return None
    s = Section("regression", groups[0][0].title if len(groups) == 1 else "Regression")
    for task, reg in groups:
        preds = {}
        if ds is not None:
            for mode in order_modes(result_mode(r) for r in reg):
                pick = sorted((r for r in reg if result_mode(r) == mode and r.get("model", {}).get("uri")),
                              key=lambda r: (-float(r["label_fraction"]), str(r.get("seed"))))
                if not pick:
                    continue
                r = pick[0]
                try:
                    preds[f"{mode} {fmt_fraction(float(r['label_fraction']))} s{r.get('seed')}"] = \
                        inference.predictions(ds, r["model"]["uri"])
                except UNLOADABLE as e:
                    notes.append(f"predictions of {r['model']['uri']}: cannot load the model ({e})")
        which = f"{task.title}: " if len(groups) > 1 else ""
        s.add(Figure(figures.regression_panels(preds, reg), f"{which}mass regression",
                     f"Predicted against true jet mass on (up to {inference.PREDICT_JETS:,}) test jets (2-D histogram, "
                     "log colour) for one model per mode (the most labels, first seed); residuals; mean relative bias "
                     "in quantile bins of true mass (from every result file, mean ± std over seeds); resolution (half "
                     "the central 68% width of (pred − true)/true) in the same bins."))
    return s
