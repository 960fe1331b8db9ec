"""A cheap representation-quality monitor: weighted k-NN accuracy of quark vs gluon.

Embeds a bank of labelled train jets and the validation split with the frozen
encoder (``forward_features``, L2-normalised), then classifies each validation jet
by a vote of its ``k`` most cosine-similar bank jets, weighted by
``exp(similarity / T)`` (Wu et al. 2018, the monitor DINO and solo-learn use).
No training involved, so it tracks the encoder alone, epoch by epoch.

And a collapse monitor, :func:`embedding_stats`: the per-dimension spread and the effective
rank of a batch of embeddings, with a ``collapsed`` verdict (the thresholds are stated and
justified there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from jetlib.data.loader import JetLoader


@torch.no_grad()
def embed(encoder, loader: JetLoader, max_jets: int, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, F) normalised, labels (N,)) for up to ``max_jets`` jets, in loader order."""
    feats, labels, n = [], [], 0
    was_training = encoder.training
    encoder.eval()
    for batch in loader:
        with autocast():
            f = encoder.forward_features(batch.x)
        feats.append(F.normalize(f.float(), dim=1))
        labels.append(batch.y)
        n += len(batch)
        if n >= max_jets:
            break
    encoder.train(was_training)
    return torch.cat(feats)[:max_jets], torch.cat(labels)[:max_jets]


def knn_predict(bank: torch.Tensor, bank_y: torch.Tensor, query: torch.Tensor, k: int = 20,
                temperature: float = 0.07, n_classes: int = 2) -> torch.Tensor:
    """Class scores (Q, n_classes) of ``query`` (Q, F) from a weighted vote of its k nearest ``bank`` rows."""
    sim = query @ bank.T  # (Q, N), cosine: rows are normalised
    top, idx = sim.topk(min(k, bank.shape[0]), dim=1)
    weights = (top / temperature).exp()
    votes = F.one_hot(bank_y[idx], n_classes).float()  # (Q, k, n_classes)
    return (votes * weights.unsqueeze(-1)).sum(1)


def knn_accuracy(encoder, train: JetLoader, val: JetLoader, bank_jets: int, val_jets: int, k: int,
                 autocast) -> float:
    bank, bank_y = embed(encoder, train, bank_jets, autocast)
    query, query_y = embed(encoder, val, val_jets, autocast)
    pred = knn_predict(bank, bank_y, query, k).argmax(1)
    return float((pred == query_y).float().mean())


# Collapse thresholds (see embedding_stats).
# collapsed below this fraction of 1/sqrt(D), the spread of directions uniform on the sphere. Not 0.1: the monitor
# reads the encoder's pooled post-ReLU features, all positive, whose directions crowd round their common mean; healthy
# runs measured 0.012-0.025 x 1/sqrt(D) (tiny preset, effective rank 9-11 of 16, k-NN above chance) and ~0.1 x
# (cpu preset SimCLR), so 0.1 called healthy encoders collapsed.
STD_FRACTION = 0.01
RANK_FRACTION = 0.01  # collapsed below this fraction of D ...
MIN_RANK = 1.5  # ... or below 1.5 whatever D: one direction holds ~85% of the singular values' mass
SPREAD_TOL = 1e-7  # singular values under sqrt(N) * this are rounding, not spread: fp32 resolves unit vectors to ~6e-8


@torch.no_grad()
def embedding_stats(h: torch.Tensor) -> dict:
    """Collapse diagnostics of a batch of embeddings h: (N, D), any float dtype, any device (computed on the CPU).

    The rows are L2-normalised (in float64) first, so the numbers do not depend on the
    embedding's scale:

    * ``std_mean``, ``std_min``: the mean and the minimum over dimensions of the per-dimension
      standard deviation over the batch (unbiased). Directions spread uniformly over the unit
      sphere give 1/sqrt(D) in every dimension; a collapsed embedding gives 0 (Chen and He
      2021, SimSiam, Sec. 4.1 and Fig. 2, monitor exactly this quantity).
    * ``effective_rank``: Roy and Vetterli 2007, exp of the Shannon entropy of the singular
      values normalised to sum 1 (``p_k = s_k / sum s``, ``exp(-sum p_k log p_k)``), of the
      normalised embeddings *centred* over the batch, i.e. of their covariance's spectrum
      (where dimensional collapse shows: Jing et al. 2022). Centring keeps a common mean
      direction (ReLU features are all positive) from counting as a dimension. Between 1 and
      min(N, D); 0 when every row points the same way (no spread at all).
    * ``collapsed``: ``std_mean < 0.01 / sqrt(D)`` (the spread is under a hundredth of the uniform
      sphere's: the rows' mean cosine similarity is above ~0.9999; :data:`STD_FRACTION` says why not a
      tenth) or ``effective_rank <
      max(1.5, 0.01 D)`` (the spread lives in fewer than 1% of the dimensions, or in one).

    Returns:
        ``{"std_mean": float, "std_min": float, "effective_rank": float, "collapsed": bool}``.

    Raises:
        ValueError: when h is not (N, D) with N >= 2, or holds a NaN or an infinity.
    """
    if h.dim() != 2 or h.shape[0] < 2 or h.shape[1] < 1:
        raise ValueError(f"embedding_stats takes an (N, D) batch with N >= 2, got shape {tuple(h.shape)}")
    if not torch.isfinite(h).all():
        raise ValueError("embedding_stats: the embedding holds NaN or infinite values")
    n, d = h.shape
    # on the CPU in float64: one small SVD an epoch, the same numbers on every device
    z = F.normalize(h.detach().cpu().double(), dim=1)  # (N, D), unit rows
    std = z.std(dim=0)  # (D,)
    s = torch.linalg.svdvals(z - z.mean(dim=0))  # (min(N, D),)
    s = s[s > SPREAD_TOL * math.sqrt(n)]
    if s.numel() == 0:
        effective_rank = 0.0
    else:
        p = s / s.sum()
        effective_rank = math.exp(float(-(p * p.log()).sum()))
    std_mean = float(std.mean())
    collapsed = std_mean < STD_FRACTION / math.sqrt(d) or effective_rank < max(MIN_RANK, RANK_FRACTION * d)
    return {"std_mean": std_mean, "std_min": float(std.min()), "effective_rank": effective_rank,
            "collapsed": bool(collapsed)}
