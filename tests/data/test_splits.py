import numpy as np
import pytest

from jetlib.data.splits import TEST, TRAIN, VAL, SplitConfig, assign
from jetlib.errors import ConfigError, DataError


def labels(n_q, n_g, seed=0):
    y = np.array([1] * n_q + [0] * n_g)
    return np.random.default_rng(seed).permutation(y)


def subset_mask(a, j):
    return (a.split == TRAIN) & (a.tier <= j)


def test_worked_example_from_docstring():
    a = assign(1000, labels(500, 500), SplitConfig())
    y = labels(500, 500)
    for c in (0, 1):
        assert ((a.split == TEST) & (y == c)).sum() == 100
        assert ((a.split == VAL) & (y == c)).sum() == 50
        assert ((a.split == TRAIN) & (y == c)).sum() == 350
    tiers = [int(((a.split == TRAIN) & (a.tier == j)).sum()) for j in range(5)]
    assert tiers == [8, 62, 106, 174, 350]
    assert a.subset_per_class == {0.01: 4, 0.1: 35, 0.25: 88, 0.5: 175, 1.0: None}


def test_deterministic_and_seed_dependent():
    y = labels(300, 200)
    a, b = assign(500, y, SplitConfig(seed=3)), assign(500, y, SplitConfig(seed=3))
    c = assign(500, y, SplitConfig(seed=4))
    for field in ("split", "tier", "order"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.split, c.split)


def test_subsets_nested_and_class_balanced_even_when_classes_are_not():
    y = labels(700, 300)
    cfg = SplitConfig(label_fractions=(0.05, 0.2, 0.8, 1.0))
    a = assign(1000, y, cfg)
    previous = np.zeros(1000, bool)
    for j, f in enumerate(cfg.label_fractions):
        m = subset_mask(a, j)
        assert (m >= previous).all(), "subsets must be nested"
        previous = m
        if f < 1:
            assert (m & (y == 0)).sum() == (m & (y == 1)).sum() == a.subset_per_class[f]
    assert previous.sum() == (a.split == TRAIN).sum()  # 100% is all of train
    # 80% would be 280 per class: capped by the smaller class, 210 gluon train jets
    assert a.subset_per_class[0.8] == ((a.split == TRAIN) & (y == 0)).sum() == 210


def test_order_is_a_permutation_inside_every_group():
    a = assign(400, labels(200, 200), SplitConfig())
    for (s, t), n in a.group_sizes().items():
        rows = (a.split == s) & (a.tier == t)
        assert sorted(a.order[rows]) == list(range(n))


def test_stratified_splits_keep_class_ratios():
    y = labels(800, 200)
    a = assign(1000, y, SplitConfig(test_fraction=0.25, val_fraction=0.05))
    assert ((a.split == TEST) & (y == 1)).sum() == 200 and ((a.split == TEST) & (y == 0)).sum() == 50
    assert ((a.split == VAL) & (y == 1)).sum() == 40 and ((a.split == VAL) & (y == 0)).sum() == 10


def test_unlabelled_is_one_class():
    a = assign(200, None, SplitConfig())
    assert (a.split == TEST).sum() == 40 and (a.split == VAL).sum() == 20
    assert ((a.split == TRAIN) & (a.tier == 0)).sum() == 1  # max(1, round(0.01 * 140))
    assert a.subset_per_class[0.1] == 14


def test_too_few_jets_is_a_clear_error():
    with pytest.raises(DataError, match="too few"):
        assign(2, np.array([0, 1]), SplitConfig())


@pytest.mark.parametrize("kw", [{"test_fraction": 0.0}, {"test_fraction": 0.6, "val_fraction": 0.4},
                                {"label_fractions": (0.5, 0.1)}, {"label_fractions": (0.0, 1.0)}])
def test_bad_config(kw):
    with pytest.raises(ConfigError):
        SplitConfig(**kw)


def test_full_fraction_is_always_added():
    assert SplitConfig(label_fractions=(0.1, 0.5)).label_fractions == (0.1, 0.5, 1.0)


def test_val_subsets_follow_the_label_budget_with_a_floor():
    a = assign(1000, labels(500, 500), SplitConfig())  # the docstring's worked example: val 50 per class
    val_tiers = [int(((a.split == VAL) & (a.tier == j)).sum()) for j in range(5)]
    assert val_tiers == [50, 0, 0, 0, 50]
    assert a.val_per_class == {0.01: 25, 0.1: 25, 0.25: 25, 0.5: 25, 1.0: None}
    big = assign(20000, labels(10000, 10000), SplitConfig())  # val 1000 per class: above the floor
    assert big.val_per_class == {0.01: 25, 0.1: 100, 0.25: 250, 0.5: 500, 1.0: None}


def test_val_subsets_are_nested_class_balanced_and_capped():
    y = labels(700, 300)
    cfg = SplitConfig(label_fractions=(0.05, 0.2, 0.8, 1.0), val_floor=10)
    a = assign(1000, y, cfg)
    previous = np.zeros(1000, bool)
    for j, f in enumerate(cfg.label_fractions):
        m = (a.split == VAL) & (a.tier <= j)
        assert (m >= previous).all(), "val subsets must be nested"
        previous = m
        if f < 1:
            assert (m & (y == 0)).sum() == (m & (y == 1)).sum() == a.val_per_class[f]
    assert previous.sum() == (a.split == VAL).sum()
    # 5% of 100 val jets is 2.5 per class: the floor gives 10; 80% would be 40: capped by 30 gluon val jets
    assert a.val_per_class[0.05] == 10 and a.val_per_class[0.8] == 30
    train_before = assign(1000, y, SplitConfig(label_fractions=cfg.label_fractions, val_floor=1))
    np.testing.assert_array_equal(a.split, train_before.split)  # the floor moves no row between splits
    is_train = a.split == TRAIN
    np.testing.assert_array_equal(a.tier[is_train], train_before.tier[is_train])


def test_val_floor_must_be_positive():
    with pytest.raises(ConfigError, match="val floor"):
        SplitConfig(val_floor=0)
