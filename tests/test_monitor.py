"""The collapse monitor (effective rank, per-dimension spread) against numpy's SVD and known cases."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jetlib.monitor import STD_FRACTION, embedding_stats, knn_predict


def numpy_stats(h):
    """Roy and Vetterli 2007 effective rank of the centred, L2-normalised rows, and their std, via numpy."""
    z = np.asarray(h, dtype=np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)
    p = s / s.sum()
    return {"std": z.std(axis=0, ddof=1), "effective_rank": float(np.exp(-(p * np.log(p)).sum()))}


def test_values_match_numpys_svd():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(50, 10, generator=g) * torch.logspace(0, -1.5, 10) + 0.5  # anisotropic, off-centre
    got, ref = embedding_stats(h), numpy_stats(h)
    assert got["effective_rank"] == pytest.approx(ref["effective_rank"], rel=1e-6)
    assert got["std_mean"] == pytest.approx(ref["std"].mean(), rel=1e-6)
    assert got["std_min"] == pytest.approx(ref["std"].min(), rel=1e-6)
    assert 1 < got["effective_rank"] < 10  # the decaying scales leave it well below D


@pytest.mark.parametrize("d", [8, 32, 128])
def test_isotropic_gaussian_has_effective_rank_close_to_d(d):
    h = torch.randn(64 * d, d, generator=torch.Generator().manual_seed(d))
    stats = embedding_stats(h)
    assert 0.97 * d < stats["effective_rank"] <= d
    assert stats["std_mean"] == pytest.approx(1 / math.sqrt(d), rel=0.05)  # the uniform sphere's spread
    assert stats["collapsed"] is False


def test_rank_one_batch_has_effective_rank_one_and_is_collapsed():
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(256, 1, generator=g), torch.randn(1, 64, generator=g)
    stats = embedding_stats(u @ v)  # rows +-v: a wide spread per dimension, all along one direction
    assert stats["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert stats["std_mean"] > 0.1 / math.sqrt(64)  # so the verdict comes from the rank alone
    assert stats["collapsed"] is True


@pytest.mark.parametrize("value", [0.0, 0.3, -7.0])
def test_constant_batch_is_collapsed(value):
    h = torch.full((32, 16), value)
    h[:, 0] += 1.0  # a zero row has no direction; keep the rows non-zero
    stats = embedding_stats(h)
    assert stats == {"std_mean": 0.0, "std_min": 0.0, "effective_rank": 0.0, "collapsed": True}


def test_one_point_plus_tiny_noise_is_full_rank_but_collapsed_by_its_spread():
    g = torch.Generator().manual_seed(2)
    h = 1.0 + 1e-3 * torch.randn(1024, 64, generator=g)  # every row nearly the same direction
    stats = embedding_stats(h)
    assert stats["effective_rank"] > 0.9 * 64
    assert stats["std_mean"] < STD_FRACTION / math.sqrt(64)
    assert stats["collapsed"] is True


def test_positive_features_crowding_round_their_mean_are_not_collapsed():
    """Pooled post-ReLU features (all positive, a large common mean) spread little in direction yet span
    every dimension: healthy tiny-preset encoders measured 0.012-0.025 x 1/sqrt(D) with effective rank 9-11
    of 16. Such a batch is not collapsed (a tenth of 1/sqrt(D) as the threshold called it collapsed)."""
    g = torch.Generator().manual_seed(3)
    h = torch.relu(15.0 + 0.3 * torch.randn(2000, 16, generator=g))
    stats = embedding_stats(h)
    assert 0.01 / math.sqrt(16) < stats["std_mean"] < 0.1 / math.sqrt(16)
    assert stats["effective_rank"] > 0.9 * 16
    assert stats["collapsed"] is False


def test_scale_and_dtype_do_not_change_the_numbers():
    h = torch.randn(128, 16, generator=torch.Generator().manual_seed(3))
    ref = embedding_stats(h)
    for other in (1e3 * h, h.double(), h.bfloat16()):
        got = embedding_stats(other)
        tol = 1e-2 if other.dtype == torch.bfloat16 else 1e-6
        for key in ("std_mean", "std_min", "effective_rank"):
            assert got[key] == pytest.approx(ref[key], rel=tol), key


@pytest.mark.parametrize("h,match", [(torch.randn(16), "shape"), (torch.randn(1, 4), "shape"),
                                     (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN")])
def test_bad_input_is_refused(h, match):
    with pytest.raises(ValueError, match=match):
        embedding_stats(h)


def test_knn_votes_for_the_nearest_cluster():
    bank = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]]), dim=1)
    query = F.normalize(torch.tensor([[0.9, 0.0], [-0.8, 0.3]]), dim=1)
    scores = knn_predict(bank, torch.tensor([0, 0, 1, 1]), query, k=2)
    assert scores.argmax(1).tolist() == [0, 1]
    assert scores[0, 1] == 0 and scores[1, 0] == 0  # both neighbours of each query share its class
