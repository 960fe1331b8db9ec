"""A cheap representation-quality monitor: weighted k-NN accuracy of quark vs gluon.

Embeds a bank of labelled train jets and the validation split with the frozen
encoder (``forward_features``, L2-normalised), then classifies each validation jet
by a vote of its ``k`` most cosine-similar bank jets, weighted by
``exp(similarity / T)`` (Wu et al. 2018, the monitor DINO and solo-learn use).
No training involved, so it tracks the encoder alone, epoch by epoch.
"""

from __future__ import annotations

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
