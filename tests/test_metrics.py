"""Metrics against scikit-learn and against values worked out by hand."""

import numpy as np
import pytest
from sklearn import metrics as skm

from jetlib import metrics


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(2)  # rounded: plenty of ties
    return y, s


def test_roc_and_auc_match_sklearn(scores):
    y, s = scores
    fpr, tpr, thr = metrics.roc_curve(y, s)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert metrics.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_auc_by_hand():
    # quarks score 0.9, 0.4; gluons 0.5, 0.1: of 4 pairs, 3 are ordered right
    assert metrics.roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    assert metrics.roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half


def test_classification_matches_sklearn(scores):
    y, s = scores
    m = metrics.classification(y, s)
    pred = (s >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert len(m["roc"]["tpr"]) == len(m["roc"]["fpr"]) == 201 and m["n"] == 500


def test_background_rejection_by_hand():
    # 4 quarks, 4 gluons. At eps_S = 0.5 the threshold passes the two best quarks (0.9, 0.8) and
    # one gluon (0.85): eps_B = 1/4, rejection 4.
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.3, 0.2, 0.85, 0.1, 0.05, 0.01]
    assert metrics.rejection_at(y, s, 0.5) == pytest.approx(4.0)
    assert metrics.rejection_at([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2], 0.5) == float("inf")


def test_regression_matches_sklearn():
    rng = np.random.default_rng(1)
    true = rng.uniform(10, 150, 4000)
    pred = true * rng.normal(1.05, 0.1, 4000)
    m = metrics.regression(true, pred)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(true, pred))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(true, pred))
    assert m["r2"] == pytest.approx(skm.r2_score(true, pred))
    assert m["rmse"] == pytest.approx(np.sqrt(m["mse"]))
    assert m["relative_resolution"] == pytest.approx(0.1, abs=0.015)  # the smearing put in
    assert m["relative_bias_median"] == pytest.approx(0.05, abs=0.015)
    assert sum(b["n"] for b in m["bias_in_bins"]) == 4000 and len(m["bias_in_bins"]) == 8
    for b in m["bias_in_bins"]:  # a 5% scale bias grows with the mass
        assert b["relative_bias"] == pytest.approx(0.05, abs=0.015)
    assert m["bias_in_bins"][-1]["bias"] > m["bias_in_bins"][0]["bias"]


def test_regression_by_hand():
    m = metrics.regression(np.array([10.0, 20.0]), np.array([12.0, 18.0]))
    assert (m["mse"], m["mae"], m["bias"]) == (4.0, 2.0, 0.0)
    assert m["r2"] == pytest.approx(1 - 8 / 50)
