"""Metrics against scikit-learn and against values worked out by hand."""

import json
import re

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


def test_auc_matches_sklearn_and_by_hand(scores):
    y, s = scores
    assert metrics.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    # quarks score 0.9, 0.4; gluons 0.5, 0.1: of 4 pairs, 3 are ordered right
    assert metrics.roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    assert metrics.roc_auc([1, 0, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.75)  # a tie counts half
    assert np.isnan(metrics.roc_auc([1, 0, 0], [0.5, np.nan, 0.2]))  # a diverged model: no number


def test_classification_matches_sklearn(scores):
    y, s = scores
    m = metrics.classification(y, s)
    pred = (s >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert len(m["roc"]["tpr"]) == len(m["roc"]["fpr"]) <= 200 and m["n"] == 500 and m["undefined"] == {}
    fpr, tpr, _ = skm.roc_curve(y, s)  # the thinned curve lies on the full one
    np.testing.assert_allclose(m["roc"]["fpr"], np.interp(m["roc"]["tpr"], tpr, fpr), atol=1e-5)


def test_background_rejection_by_hand():
    # 4 quarks, 4 gluons. At eps_S = 0.5 the threshold passes the two best quarks (0.9, 0.8) and
    # one gluon (0.85): eps_B = 1/4, rejection 4.
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.3, 0.2, 0.85, 0.1, 0.05, 0.01]
    assert metrics.classification(y, s)["rejection_at_eps_s_0.5"] == pytest.approx(4.0)


@pytest.mark.parametrize(("y", "s", "keys", "reason"), [
    ([1, 1, 1, 1], [0.9, 0.2, 0.6, 0.4], ("roc_auc", "rejection_at_eps_s_0.5", "roc"), "only one class"),
    ([0, 0, 0], [0.1, 0.2, 0.3], ("roc_auc", "f1"), "only one class|no quark"),
    ([1, 0, 1, 0], [0.7] * 4, ("roc_auc", "rejection_at_eps_s_0.3"), "constant scores"),
    ([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2], ("rejection_at_eps_s_0.5",), "no background jet passes"),
])
def test_degenerate_input_is_null_with_a_reason_never_a_number(y, s, keys, reason):
    m = metrics.classification(y, s)
    for key in keys:
        assert m[key] is None, key
        assert key in m["undefined"] and re.search(reason, m["undefined"][key]), m["undefined"]
    json.dumps(m, allow_nan=False)  # valid JSON: no NaN or Infinity anywhere


def test_degenerate_regression_is_null_with_a_reason():
    m = metrics.regression(np.full(5, 40.0), np.array([38.0, 41, 40, 42, 39]))
    assert m["r2"] is None and "constant true mass" in m["undefined"]["r2"] and m["mae"] == pytest.approx(1.2)
    m = metrics.regression(np.zeros(3), np.array([1.0, 2, 3]))
    assert m["relative_resolution"] is None and "positive true mass" in m["undefined"]["relative_resolution"]
    json.dumps(m, allow_nan=False)


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
