"""Deterministic train/val/test splits and nested, class-balanced label-fraction subsets.

Everything here is a pure function of (number of jets, labels, :class:`SplitConfig`):
the same file and seed give the same splits on any machine, whatever the worker
count or store.

How a row is placed (per class ``c``, with ``rng = default_rng(seed)`` drawn class
by class in ascending label order):

1. the class's rows are permuted; the first ``round(test_fraction * n_c)`` go to
   *test*, the next ``round(val_fraction * n_c)`` to *val* (val is carved out of
   what would otherwise be train), the rest to *train*, in permuted order;
2. the train rows of each class are thus ranked ``0, 1, 2, ...``. For a label
   fraction ``f < 1`` the subset holds the ``k(f)`` lowest-ranked rows of *every*
   class, ``k(f) = min(max(1, round(f * n_train / n_classes)), min_c n_train_c)``:
   equal counts per class, and nested because ``k`` grows with ``f``. ``f = 1`` is
   the whole train split.
3. rows are stored in *tiers*: tier ``j`` holds the rows in subset ``f_j`` but not in
   ``f_{j-1}``, so the subset for ``f_j`` is exactly tiers ``0..j`` and a 1% run reads
   1% of the data.
4. *val* is tiered the same way, so that a run with few labels also validates on few
   (choosing its best epoch on 800 labelled jets would spend a label budget the run
   claims not to have): per class the val subset of ``f`` holds the
   ``v(f) = min(max(val_floor, round(f * n_val / n_classes)), min_c n_val_c)`` lowest-ranked
   val rows. ``val_floor`` (25 per class by default) keeps early stopping from
   following the noise of a handful of jets: 50 jets put the accuracy's standard error
   near 7%, below which the best epoch is mostly chance. Inside each (split, tier) group the storage order is a fresh
   random permutation, so shards are well mixed even if the source file is sorted.

Worked example: 1000 jets, 500 quark and 500 gluon, defaults (test 0.2, val 0.1,
fractions 0.01 0.1 0.25 0.5 1): per class 100 test, 50 val, 350 train. ``n_train =
700``; ``k(0.01) = round(3.5) = 4`` per class (8 jets), ``k(0.1) = 35`` (70 jets),
``k(0.25) = 88`` (176), ``k(0.5) = 175`` (350), and ``1.0`` is all 700. Tier sizes are
8, 62, 106, 174, 350. Val (100 jets) has ``v(0.01) = max(25, round(0.5)) = 25`` per class, then
25, 25, 25 and all 100: val tier sizes 50, 0, 0, 0, 50.

Unlabelled data is one class: ``k(f) = max(1, round(f * n_train))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jetlib.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2


@dataclass(frozen=True)
class SplitConfig:
    test_fraction: float = 0.2  # share of every class held out for the final test
    val_fraction: float = 0.1  # share of every class carved from train for validation/early stopping
    label_fractions: tuple[float, ...] = (0.01, 0.1, 0.25, 0.5, 1.0)  # nested train subsets
    seed: int = 0  # seeds every permutation here
    val_floor: int = 25  # per class: the smallest validation subset a label fraction gets (capped by val)

    def __post_init__(self):
        if not (0 < self.test_fraction < 1 and 0 <= self.val_fraction < 1):
            raise ConfigError("test fraction must be in (0, 1) and val fraction in [0, 1)")
        if self.test_fraction + self.val_fraction >= 1:
            raise ConfigError(f"test ({self.test_fraction}) + val ({self.val_fraction}) leave no train data")
        fr = self.label_fractions
        if not fr or any(not 0 < f <= 1 for f in fr) or list(fr) != sorted(set(fr)):
            raise ConfigError(f"label fractions must be increasing values in (0, 1], got {list(fr)}")
        if self.val_floor < 1:
            raise ConfigError(f"val floor must be at least 1 jet per class, got {self.val_floor}")
        if fr[-1] != 1.0:
            object.__setattr__(self, "label_fractions", (*fr, 1.0))


@dataclass
class Assignment:
    """Where every source row goes. Arrays have one entry per source row."""

    split: np.ndarray  # int8: TRAIN, VAL or TEST
    tier: np.ndarray  # int8: tier index for train and val rows, 0 for test (one tier)
    order: np.ndarray  # int64: position inside its (split, tier) group, a random permutation
    subset_per_class: dict[float, int | None]  # k(f) per class; None for f = 1 (all train)
    classes: list[int]  # label values, ascending ([0] if unlabelled)
    val_per_class: dict[float, int | None] | None = None  # v(f) per class; None for f = 1 (all val)

    def group_sizes(self) -> dict[tuple[int, int], int]:
        """{(split, tier): rows} for every non-empty group."""
        keys, counts = np.unique(np.stack([self.split, self.tier]), axis=1, return_counts=True)
        return {(int(s), int(t)): int(c) for (s, t), c in zip(keys.T, counts, strict=True)}


def _tier_bounds(n_c: np.ndarray, fractions: tuple[float, ...], floor: int = 1) -> dict[float, int | None]:
    """Rows per class in each nested subset: ``f`` of the whole, at least ``floor``, at most the smallest class."""
    n_classes = len(n_c)
    total, smallest = int(n_c.sum()), int(n_c.min())
    k = {}
    for f in fractions:
        k[f] = None if f == 1.0 else min(max(floor, round(f * total / n_classes)), smallest)
    return k


def _tiers(in_split: np.ndarray, rank: np.ndarray, k: dict[float, int | None], fractions) -> np.ndarray:
    """Tier of every row of one split from its rank inside its class (rows outside the split: 0)."""
    tier = np.zeros(len(rank), dtype=np.int8)
    tier[in_split] = len(fractions) - 1  # beyond every k(f < 1): only in the full set
    for j, f in reversed(list(enumerate(fractions[:-1]))):
        tier[in_split & (rank < k[f])] = j
    return tier


def assign(n: int, labels: np.ndarray | None, cfg: SplitConfig) -> Assignment:
    """Place ``n`` rows into splits and tiers (see the module docstring for the rule)."""
    if labels is not None and len(labels) != n:
        raise ValueError("labels must have one entry per row")
    lab = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    classes = sorted(int(c) for c in np.unique(lab))
    rng = np.random.default_rng([cfg.seed, 0x5EED])

    split = np.full(n, -1, dtype=np.int8)
    rank = np.full(n, -1, dtype=np.int64)  # rank of a train (val) row within its class's train (val) rows
    n_train_c, n_val_c = [], []
    for c in classes:
        rows = rng.permutation(np.flatnonzero(lab == c))
        n_test = round(cfg.test_fraction * len(rows))
        n_val = round(cfg.val_fraction * len(rows))
        split[rows[:n_test]] = TEST
        split[rows[n_test:n_test + n_val]] = VAL
        rank[rows[n_test:n_test + n_val]] = np.arange(n_val)
        train_rows = rows[n_test + n_val:]
        split[train_rows] = TRAIN
        rank[train_rows] = np.arange(len(train_rows))
        n_train_c.append(len(train_rows))
        n_val_c.append(n_val)
    n_train_c, n_val_c = np.array(n_train_c), np.array(n_val_c)
    if n_train_c.min() == 0 or not (split == TEST).any():
        raise DataError(f"{n} jets are too few for the splits (test {cfg.test_fraction}, val "
                        f"{cfg.val_fraction}): every class needs train jets and the test split needs one")

    fr = cfg.label_fractions
    k = _tier_bounds(n_train_c, fr)
    v = _tier_bounds(n_val_c, fr, cfg.val_floor) if n_val_c.min() > 0 else dict.fromkeys(fr)
    tier = _tiers(split == TRAIN, rank, k, fr)
    if n_val_c.min() > 0:
        tier = np.maximum(tier, _tiers(split == VAL, rank, v, fr))

    order = np.empty(n, dtype=np.int64)
    for s in range(len(SPLITS)):
        for t in np.unique(tier[split == s]):
            rows = np.flatnonzero((split == s) & (tier == t))
            order[rows] = rng.permutation(len(rows))
    return Assignment(split=split, tier=tier, order=order, subset_per_class=k, classes=classes,
                      val_per_class=v)
