"""jetlib.baseline: the VGG baseline's class weight, mixup, one-cycle schedule and stopping, on a tiny
unbalanced toy (a third quarks, 24x24).

The loss is observed by wrapping ``torch.nn.functional.binary_cross_entropy_with_logits`` (torch's public
function, called through unchanged); the schedule is compared with torch's own ``OneCycleLR`` stepped
by hand (pytorch/pytorch v2.14.1, torch/optim/lr_scheduler.py, ``OneCycleLR.get_lr``: the last phase
ends at step ``total_steps - 1`` on the floor ``max_lr / div_factor / final_div_factor``; one step more
anneals past the end, the cosine turning back up, and ``last_epoch > total_steps`` raises ``ValueError``)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from jetlib import baseline as bl
from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import open_dataset
from jetlib.data.splits import SplitConfig
from tests.conftest import write_toy_h5


@pytest.fixture(scope="module")
def unbalanced(tmp_path_factory):
    d = tmp_path_factory.mktemp("unbalanced")
    write_toy_h5(d / "toy.h5", n=120, size=24, quarks=1 / 3)
    cfg = IngestConfig(split=SplitConfig(label_fractions=(0.5, 1.0)), shard_rows=64, row_group_rows=16,
                       image_size=None)
    return open_dataset(ingest(d / "toy.h5", str(d / "store"), cfg=cfg))


@pytest.fixture
def losses(monkeypatch):
    """Every weighted BCE call of a training step: (targets, pos_weight), as torch received them."""
    calls, real = [], F.binary_cross_entropy_with_logits

    def spy(logits, target, *args, pos_weight=None, **kw):
        if pos_weight is not None:  # training; validation's loss is unweighted
            calls.append((target.detach().clone(), pos_weight.detach().clone()))
        return real(logits, target, *args, pos_weight=pos_weight, **kw)

    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", spy)
    return calls


def train_labels(ds, fraction: float) -> torch.Tensor:
    return torch.cat([b.y for b in JetLoader(ds, "train", fraction=fraction, batch_size=64, shuffle=False)])


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_pos_weight_is_gluons_over_quarks_of_the_labelled_subset(unbalanced, tmp_path, losses, fraction):
    """A subset below 1 is class-balanced (jetlib.data.splits), so weight 1; all of train keeps the toy's 2:1."""
    y = train_labels(unbalanced, fraction)
    expected = float((y == 0).sum() / (y == 1).sum())
    assert expected == 1.0 if fraction < 1 else expected > 1.5
    cfg = bl.make_config("tiny", epochs=1, label_fraction=fraction)
    bl.baseline(unbalanced, str(tmp_path / "v"), cfg, device="cpu")
    heads = bl.make_config("tiny").model.heads
    assert len(losses) == heads * math.ceil(len(y) / 16)  # every head, every batch
    assert all(w.item() == pytest.approx(expected) for _, w in losses)


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_mixup_blends_pairs_of_labels_only_when_on(unbalanced, tmp_path, losses, alpha):
    bl.baseline(unbalanced, str(tmp_path / "v"), bl.make_config("tiny", epochs=2, mixup_alpha=alpha), device="cpu")
    targets = [t for t, _ in losses]
    assert all(((t >= 0) & (t <= 1)).all() for t in targets)
    soft = [sorted({round(v, 6) for v in t.tolist()} - {0.0, 1.0}) for t in targets]
    if alpha == 0:
        assert all(s == [] for s in soft)  # hard labels
        return
    assert sum(map(bool, soft)) > len(soft) / 2  # most batches mix a quark with a gluon somewhere
    for s in soft:  # lam * y + (1 - lam) * y[perm]: the only soft values are lam and 1 - lam
        assert len(s) <= 2 and (len(s) < 2 or s[0] + s[1] == pytest.approx(1.0))


def reference_lr(max_lr: float, total: int, steps: int) -> float:
    """The learning rate of torch's OneCycleLR (the baseline's defaults) after ``steps`` steps."""
    p = torch.nn.Parameter(torch.zeros(1))
    sched = torch.optim.lr_scheduler.OneCycleLR(torch.optim.AdamW([p], lr=max_lr), max_lr=max_lr, total_steps=total)
    for _ in range(steps):
        sched.optimizer.step()
        sched.step()
    return sched.get_last_lr()[0]


def test_the_cycle_is_stepped_once_per_batch_and_ends_on_its_last_step(unbalanced, tmp_path):
    cfg = bl.make_config("tiny", epochs=3, max_lr=2e-3)
    run = bl.baseline(unbalanced, str(tmp_path / "v"), cfg, device="cpu")
    per_epoch = math.ceil(run["labels"]["train_jets"] / cfg.batch_size)
    total = cfg.epochs * per_epoch
    lrs = [h["lr"] for h in json.loads((tmp_path / "v" / "metrics.json").read_text())["epochs"]]
    # the last of the total_steps learning rates is the floor, max_lr / 25 / 1e4: reached, never passed
    expected = [reference_lr(cfg.max_lr, total, min((e + 1) * per_epoch, total - 1)) for e in range(cfg.epochs)]
    assert lrs == pytest.approx(expected, rel=1e-9) and lrs[-1] == pytest.approx(2e-3 / 25 / 1e4)


@pytest.mark.parametrize("patience,epochs_run", [(None, 4), (2, 3)])
def test_without_patience_the_whole_cycle_runs(unbalanced, tmp_path, monkeypatch, patience, epochs_run):
    """Validation that never improves after epoch 0: patience None trains all 4 epochs, patience 2 stops after 3;
    either way the best epoch is 0."""
    scores = iter([0.9, 0.6, 0.7, 0.6])
    real = bl.classification_scores
    monkeypatch.setattr(bl, "classification_scores", lambda p: {**real(p), "val_accuracy": next(scores)})
    run = bl.baseline(unbalanced, str(tmp_path / "v"), bl.make_config("tiny", epochs=4, patience=patience),
                      device="cpu")
    assert run["training"]["epochs_run"] == epochs_run and run["training"]["stopped_early"] == (patience is not None)
    assert run["training"]["best_epoch"] == 0 and run["training"]["best_value"] == 0.9
    assert run["config"]["patience"] == patience
