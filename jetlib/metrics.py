"""Evaluation metrics: quark/gluon classification and jet-mass regression, as plain NumPy functions.

Conventions: the positive class (signal) is the quark (``y = 1``), scores are the
predicted quark probability; signal efficiency ``eps_S`` is the true-positive rate and
background efficiency ``eps_B`` the false-positive rate, so background rejection at a
working point is ``1 / eps_B`` at the threshold where ``eps_S`` reaches it (linearly
interpolated on the ROC curve, the usual HEP convention). Masses are in GeV, already
de-normalised. The tests check each function against scikit-learn.
"""

from __future__ import annotations

import numpy as np


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0) and ending at (1, 1); ties share a point."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    s, yy = np.asarray(score, dtype=np.float64)[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(yy)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    n_pos, n_neg = max(y.sum(), 1), max((~y).sum(), 1)
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the probability a quark scores above a gluon (ties count half)."""
    fpr, tpr, _ = roc_curve(y, score)
    return float(np.trapezoid(tpr, fpr))


def rejection_at(y: np.ndarray, score: np.ndarray, signal_efficiency: float) -> float:
    """Background rejection 1/eps_B where eps_S = ``signal_efficiency`` (inf if no background passes)."""
    fpr, tpr, _ = roc_curve(y, score)
    eps_b = float(np.interp(signal_efficiency, tpr, fpr))
    return float("inf") if eps_b <= 0 else 1.0 / eps_b


def confusion(y: np.ndarray, pred: np.ndarray) -> list[list[int]]:
    """[[TN, FP], [FN, TP]]: rows are the true class (gluon, quark), columns the prediction."""
    y, pred = np.asarray(y).astype(int), np.asarray(pred).astype(int)
    return [[int(((y == t) & (pred == p)).sum()) for p in (0, 1)] for t in (0, 1)]


def f1(y: np.ndarray, pred: np.ndarray) -> float:
    (_, fp), (fn, tp) = confusion(y, pred)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def thin(fpr: np.ndarray, tpr: np.ndarray, points: int = 201) -> dict:
    """The ROC curve at ``points`` evenly spaced signal efficiencies, small enough for JSON and the UI."""
    grid = np.linspace(0, 1, points)
    return {"tpr": grid.round(6).tolist(), "fpr": np.interp(grid, tpr, fpr).round(6).tolist()}


def classification(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict:
    """Every classification metric the report shows, from labels and quark probabilities."""
    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    pred = (prob >= threshold).astype(int)
    fpr, tpr, _ = roc_curve(y, prob)
    return {
        "accuracy": float((pred == y).mean()),
        "f1": f1(y, pred),
        "roc_auc": float(np.trapezoid(tpr, fpr)),
        "rejection_at_eps_s_0.5": rejection_at(y, prob, 0.5),
        "rejection_at_eps_s_0.3": rejection_at(y, prob, 0.3),
        "confusion_matrix": confusion(y, pred),
        "roc": thin(fpr, tpr),
        "n": int(len(y)),
    }


def regression(true: np.ndarray, pred: np.ndarray, bins: int = 8) -> dict:
    """Every mass-regression metric the report shows (GeV); bias in ``bins`` quantile bins of true mass."""
    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    err = pred - true
    rel = err / np.where(true > 0, true, np.nan)
    rel = rel[np.isfinite(rel)]
    mse = float((err**2).mean())
    ss_tot = float(((true - true.mean()) ** 2).sum())
    q16, q50, q84 = np.percentile(rel, [16, 50, 84]) if len(rel) else (np.nan,) * 3
    edges = np.unique(np.quantile(true, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, true, side="right") - 1, 0, len(edges) - 2)
    per_bin = []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.any():
            per_bin.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(sel.sum()),
                            "true_mean": float(true[sel].mean()), "bias": float(err[sel].mean()),
                            "relative_bias": float((err[sel] / np.maximum(true[sel], 1e-9)).mean())})
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.abs(err).mean()),
        "r2": float(1 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        "bias": float(err.mean()),
        "relative_resolution": float(rel.std()) if len(rel) else float("nan"),
        "relative_resolution_68": float((q84 - q16) / 2),  # robust to tails: half the central 68% width
        "relative_bias_median": float(q50),
        "bias_in_bins": per_bin,
        "n": int(len(true)),
    }
