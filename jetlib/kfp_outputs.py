"""What the KFP steps hand to the backend: artifact metadata MLMD can store, the names the
Kubeflow UI shows, the scalars and curves it compares.

A KFP 2.17 backend's launcher turns every output artifact's metadata into MLMD custom
properties (``backend/src/v2/metadata/converter.go``, ``StructValueToMLMDValue``): a string, a
number or a bool (stored as the integer 1 or 0) converts, ``None`` (a JSON null) does not and
fails the step after its compute, and the executor output is read with ``protojson``, which
refuses a non-finite number. :func:`flat_metadata` is the one gate every component's metadata
goes through. The UI labels a Metrics or ClassificationMetrics artifact by its ``display_name``
custom property (``frontend/src/components/viewers/MetricsVisualizations.tsx``) and overlays at
most 10 ROC curves, so each evaluation names itself (:func:`display_name`) and the report logs
one seed-averaged curve per mode and label fraction (:func:`report_curves`).

The Compare page is another matter (``frontend/src/lib/v2/CompareUtils.ts``, ``getScalarTableData``):
a column is ``<execution display name> > <output name>``, the execution's name being the task's
(``backend/src/v2/driver/container.go``: ``taskInfo.name``, ``evaluate`` for every iteration of the
loop), and each row is one custom property, ``display_name`` skipped. So the training an
evaluation scored is a row of its own, :data:`TRAINING_KEY` (:func:`training_name`), and a run's
headline is the one ``report > summary`` column.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

REPORT_CURVES = 8  # ROC slots of the report step: 4 classification modes x 2 label fractions (UI max: 10)


def flat_metadata(values: dict) -> dict:
    """``values`` as artifact metadata: str, bool, int and finite float kept; ``None`` and non-finite
    numbers left out (named in the log: absent means undefined, never faked).

    Raises:
        TypeError: a value is a list, dict or another type (a bug in the calling component: the
            metadata is flat by contract, so the Kubeflow UI shows and compares every key).
    """
    out, dropped = {}, []
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"artifact metadata keys are non-empty strings, got {key!r}")
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            dropped.append(key)
        elif isinstance(value, bool | int | float | str):
            out[key] = value
        else:
            raise TypeError(f"artifact metadata {key!r}: expected a string, number or bool, got "
                            f"{type(value).__name__}")
    if dropped:
        log.info("undefined, not in the artifact's metadata: %s", ", ".join(dropped))
    return out


def display_name(problem: str, mode: str, fraction: float, seed: int) -> str:
    """How the UI names one training's artifacts, e.g. ``cls-finetune f0.1 s2``."""
    return f"{problem}-{mode} f{float(fraction):g} s{int(seed)}"


TRAINING_KEY = "training"  # the Compare table's row that names the training an evaluation scored


def training_name(result: dict) -> str:
    """The one name of the training a result scored: task, mode, label fraction, seed, and for a
    pretrained mode the encoder's folder (its method and pretraining seed), e.g.
    ``cls-finetune f0.1 s2 (pretrain-vicreg-s0)``; train's and evaluate's artifacts carry it."""
    import posixpath

    name = display_name(result["task"], result["mode"], result["label_fraction"], result["seed"])
    init = (result.get("origin") or {}).get("init")
    return f"{name} ({posixpath.basename(init.rstrip('/'))})" if init else name


def result_metrics(result: dict) -> dict[str, float]:
    """The scalars an evaluate step logs to its ``Metrics`` artifact.

    The keys are fixed per task: the five classification (or regression) scores, plus
    ``label_fraction``, ``seed``, ``test_jets``, ``trainable_parameters``, ``train_seconds``.
    A score the result file holds as null (undefined on that test split, e.g. one class only)
    is skipped rather than faked, and named in the step's log, so two comparable runs show the
    same keys in the UI.
    """
    from jetlib import tasks

    keys = tasks.get(result["task"]).keys  # the result file's own scalar keys, per task
    scalars = result["scalars"]
    undefined = [k for k in keys if scalars.get(k) is None]
    if undefined:
        log.warning("undefined on this test split, not logged: %s", ", ".join(undefined))
    out = {k: float(scalars[k]) for k in keys if scalars.get(k) is not None}
    res = result.get("resources", {})
    out.update(label_fraction=float(result["label_fraction"]), seed=float(result["seed"]),
               test_jets=float(result["dataset"]["jets"]),
               trainable_parameters=float(res.get("trainable_parameters", 0)),
               train_seconds=float(res.get("train_seconds", 0.0)))
    return out


def roc_points(result: dict, points: int | None = None) -> tuple[list[float], list[float], list[float]] | None:
    """(fpr, tpr, threshold) thinned to at most ``points`` for ``ClassificationMetrics.log_roc_curve``.

    The result file stores the curve on a grid of signal efficiencies, not of score thresholds,
    so the threshold column carries the signal efficiency (the working point) of each point.
    """
    from jetlib.metrics import ROC_POINTS  # what results store; older results may hold more points

    points = points or ROC_POINTS
    roc = (result.get("classification") or {}).get("roc")
    if not roc:
        return None
    n = len(roc["tpr"])
    idx = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)}) if n > points else range(n)
    fpr, tpr = [float(roc["fpr"][i]) for i in idx], [float(roc["tpr"][i]) for i in idx]
    return fpr, tpr, list(tpr)


def report_curves(results: list[dict], limit: int = REPORT_CURVES) -> list[tuple[str, list, list, list]]:
    """One ROC curve per classification mode and label fraction, averaged over seeds (and pretraining
    seeds): the background efficiency at each signal efficiency of a shared grid is the mean of the
    runs' curves there. Returns ``(display name, fpr, tpr, threshold)`` per curve, by fraction then
    mode (the order of ``jetlib.study.MODES``), at most ``limit``; the rest are named in the log.
    """
    import numpy as np

    from jetlib.metrics import ROC_POINTS
    from jetlib.study import MODES

    groups: dict[tuple[float, str], list] = {}
    for r in results:
        roc = (r.get("classification") or {}).get("roc")
        training = f"{r.get('task')}-{r.get('mode')}"
        if roc and training in MODES:  # a classifier of the study: its result carries a ROC curve
            groups.setdefault((float(r["label_fraction"]), training), []).append(roc)
    grid = np.linspace(0, 1, ROC_POINTS).round(6)  # the grid results store (jetlib.metrics.thin)
    curves = []
    for fraction, training in sorted(groups, key=lambda k: (k[0], MODES.index(k[1]))):
        rocs = groups[fraction, training]
        fpr = np.mean([np.interp(grid, r["tpr"], r["fpr"]) for r in rocs], axis=0)
        name = f"{training} f{fraction:g} (mean of {len(rocs)})"
        curves.append((name, fpr.round(6).tolist(), grid.tolist(), grid.tolist()))
    if len(curves) > limit:
        log.warning("the report logs %d of %d ROC curves; not logged: %s", limit, len(curves),
                    ", ".join(c[0] for c in curves[limit:]))
    return curves[:limit]
