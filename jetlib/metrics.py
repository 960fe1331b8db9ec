"""Evaluation metrics: quark/gluon classification and jet-mass regression.

The standard metrics come from :mod:`sklearn.metrics`; only what scikit-learn lacks is
here: background rejection at a signal efficiency, ROC thinning for JSON, and bias and
resolution in bins of true mass. scikit-learn is imported by the functions that use it:
importing it costs a step process more CPU than a short training epoch, and every training
validates with :func:`roc_auc` alone, which is the Mann-Whitney rank statistic in numpy
(equal to ``sklearn.metrics.roc_auc_score``, ties counted half).

Conventions: the positive class (signal) is the quark (``y = 1``), scores are the
predicted quark probability; signal efficiency ``eps_S`` is the true-positive rate and
background efficiency ``eps_B`` the false-positive rate, so background rejection at a
working point is ``1 / eps_B`` at the threshold where ``eps_S`` reaches it (linearly
interpolated on the ROC curve, the usual HEP convention). Masses are in GeV, already
de-normalised.

A metric that the data cannot define is ``None``, with the reason under ``"undefined"``
(``{"roc_auc": "only one class in the labels"}``), never a number that looks like a
result: an AUC needs both classes, a ranking needs scores that are not all equal, a
rejection needs a background jet passing the cut, R^2 a spread in the truth.
"""

from __future__ import annotations

import numpy as np

ROC_POINTS = 200  # the thinned curve stored in results: enough for a plot, small enough for the UI


def _auc_problem(y: np.ndarray, score: np.ndarray) -> str | None:
    """Why the ROC of ``score`` against ``y`` means nothing, or None if it does."""
    if len(np.unique(y)) < 2:
        return "only one class in the labels"
    if np.ptp(score) == 0:
        return "constant scores: nothing is ranked"
    return None


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve, or None when it is undefined (one class, constant scores), NaN when a
    score is not finite."""
    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=np.float64)
    if _auc_problem(y, score):
        return None
    if not np.isfinite(score).all():  # a diverged model ranks nothing; NaN never wins an epoch
        return float("nan")
    # the probability that a quark outscores a gluon: tied scores share their average rank
    _, where, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[where.ravel()]
    positive = y == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def rejection_at(fpr: np.ndarray, tpr: np.ndarray, signal_efficiency: float) -> tuple[float | None, str | None]:
    """(background rejection 1/eps_B where eps_S = ``signal_efficiency``, None) or (None, why not)."""
    eps_b = float(np.interp(signal_efficiency, tpr, fpr))
    if eps_b <= 0:
        return None, f"no background jet passes at eps_S = {signal_efficiency:g}: the rejection is unbounded"
    return 1.0 / eps_b, None


def thin(fpr: np.ndarray, tpr: np.ndarray, points: int = ROC_POINTS) -> dict:
    """The ROC curve at ``points`` evenly spaced signal efficiencies, small enough for JSON and the UI."""
    grid = np.linspace(0, 1, points)
    return {"tpr": grid.round(6).tolist(), "fpr": np.interp(grid, tpr, fpr).round(6).tolist()}


def classification(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict:
    """Every classification metric the report shows, from labels and quark probabilities.

    Args:
        y: (N,) labels, 1 = quark.
        prob: (N,) predicted quark probabilities.
        threshold: the cut for accuracy, F1 and the confusion matrix.
    """
    from sklearn import metrics as skm

    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    pred = (prob >= threshold).astype(int)
    undefined: dict[str, str] = {}
    out = {"accuracy": float(skm.accuracy_score(y, pred)), "f1": None, "roc_auc": None,
           "rejection_at_eps_s_0.5": None, "rejection_at_eps_s_0.3": None,
           "confusion_matrix": skm.confusion_matrix(y, pred, labels=[0, 1]).tolist(), "roc": None}
    if y.sum() == 0 and pred.sum() == 0:
        undefined["f1"] = "no quark among the labels or the predictions"
    else:
        out["f1"] = float(skm.f1_score(y, pred))
    problem = _auc_problem(y, prob)
    if problem:
        for key in ("roc_auc", "rejection_at_eps_s_0.5", "rejection_at_eps_s_0.3", "roc"):
            undefined[key] = problem
    else:
        fpr, tpr, _ = skm.roc_curve(y, prob)
        out["roc_auc"] = float(skm.roc_auc_score(y, prob))
        out["roc"] = thin(fpr, tpr)
        for eps in (0.5, 0.3):
            key = f"rejection_at_eps_s_{eps}"
            out[key], why = rejection_at(fpr, tpr, eps)
            if why:
                undefined[key] = why
    return {**out, "n": int(len(y)), "undefined": undefined}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def regression(true: np.ndarray, pred: np.ndarray, bins: int = 8) -> dict:
    """Every mass-regression metric the report shows (GeV); bias in ``bins`` quantile bins of true mass.

    Args:
        true: (N,) true masses, GeV.
        pred: (N,) predicted masses, GeV.
    """
    from sklearn import metrics as skm

    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    err = pred - true
    positive = true > 0
    rel = err[positive] / true[positive]  # relative error is defined for positive masses only
    undefined: dict[str, str] = {}
    mse = float(skm.mean_squared_error(true, pred))
    r2 = None
    if np.ptp(true) == 0:
        undefined["r2"] = "constant true mass: R^2 has no variance to explain"
    else:
        r2 = float(skm.r2_score(true, pred))
    if len(rel):
        q16, q50, q84 = np.percentile(rel, [16, 50, 84])
        resolution = {"relative_resolution": float(rel.std()), "relative_resolution_68": float((q84 - q16) / 2),
                      "relative_bias_median": float(q50)}  # the 68% half-width is robust to tails
    else:
        resolution = dict.fromkeys(("relative_resolution", "relative_resolution_68", "relative_bias_median"))
        undefined.update(dict.fromkeys(resolution, "no jet with a positive true mass"))
    edges = np.unique(np.quantile(true, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, true, side="right") - 1, 0, max(len(edges) - 2, 0))
    per_bin = []
    for b in range(max(len(edges) - 1, 1)):
        sel = which == b
        if sel.any():
            per_bin.append({"lo": float(edges[b]), "hi": float(edges[min(b + 1, len(edges) - 1)]),
                            "n": int(sel.sum()), "true_mean": float(true[sel].mean()),
                            "bias": float(err[sel].mean()),
                            "relative_bias": _finite((err[sel] / np.maximum(true[sel], 1e-9)).mean())})
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(skm.mean_absolute_error(true, pred)),
        "r2": r2,
        "bias": float(err.mean()),
        **resolution,
        "bias_in_bins": per_bin,
        "n": int(len(true)),
        "undefined": undefined,
    }
