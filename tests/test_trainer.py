"""jetlib.trainer: the epoch loop's bookkeeping (best epoch, patience, resume) on a one-weight model with
scripted train/validate callables, and the three files ``write_outputs`` leaves."""

import json
import math

import pytest
import torch
from torch import nn

from jetlib import records
from jetlib.checkpoint import load_object
from jetlib.data.store import open_store, sha256_bytes
from jetlib.errors import ConfigError
from jetlib.trainer import FitResult, Stopping, fit, write_outputs

# val_loss per epoch: best at 1, then 3; epochs 4, 5, 6 never beat 0.4, so patience 3 stops after epoch 6
LOSSES = [0.9, 0.5, 0.6, 0.4, 0.45, 0.47, 0.48, 0.1, 0.1, 0.1]


class Script:
    """A model whose one weight is the last epoch trained, and the callables ``fit`` takes.

    ``die_at``: ``train_epoch`` of that epoch raises KeyboardInterrupt before training (a killed job)."""

    def __init__(self, scores: list[float], monitor: str = "val_loss", die_at: int | None = None):
        self.model = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(self.model.weight)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.25)
        self.scores, self.monitor, self.die_at, self.trained = scores, monitor, die_at, []

    def train_epoch(self, epoch: int) -> dict:
        if epoch == self.die_at:
            raise KeyboardInterrupt
        with torch.no_grad():
            self.model.weight.fill_(float(epoch))
        self.trained.append(epoch)
        return {"train_loss": 1.0 / (epoch + 1), "jets": 10 + epoch}

    def validate(self) -> dict:
        return {self.monitor: self.scores[self.trained[-1]], "val_other": -1.0}

    def fit(self, store, stopping: Stopping, epochs: int, config: dict | None = None) -> FitResult:
        return fit(store, self.model, self.optimizer, None, stopping, epochs, self.train_epoch, self.validate,
                   config or {"lr": 0.25}, "dataset-1")


def test_better_follows_the_direction_and_takes_any_first_value():
    up, down = Stopping("val_accuracy", True, 2), Stopping("val_loss", False, 2)
    assert up.better(0.1, None) and down.better(0.9, None)
    assert up.better(0.6, 0.5) and not up.better(0.5, 0.5) and not up.better(0.4, 0.5)
    assert down.better(0.4, 0.5) and not down.better(0.5, 0.5) and not down.better(0.6, 0.5)  # a tie never wins
    assert not up.better(math.nan, 0.5) and not down.better(math.nan, 0.5)  # NaN is never the best epoch


def test_fit_keeps_the_best_epoch_and_stops_when_patience_runs_out(tmp_path):
    s = Script(LOSSES)
    result = s.fit(open_store(str(tmp_path)), Stopping("val_loss", False, 3), 10)
    assert s.trained == [0, 1, 2, 3, 4, 5, 6] and result.stopped_early
    assert [h["best"] for h in result.history] == [True, True, False, True, False, False, False]
    assert result.best_epoch == 3 and result.best_value == 0.4
    assert result.best_state["weight"].item() == 3.0  # the weights of epoch 3, not of the last epoch (6)
    assert result.train_jets == sum(10 + e for e in range(7))
    assert result.history[2] == {"epoch": 2, "train_loss": 1 / 3, "jets": 12, "val_loss": 0.6, "val_other": -1.0,
                                 "lr": 0.25, "best": False}


def test_fit_without_running_out_of_patience_runs_every_epoch(tmp_path):
    s = Script([0.1, 0.2, 0.3, 0.4], monitor="val_accuracy")
    result = s.fit(open_store(str(tmp_path)), Stopping("val_accuracy", True, 1), 4)
    assert s.trained == [0, 1, 2, 3] and not result.stopped_early and result.best_epoch == 3


def test_a_killed_fit_resumes_to_the_uninterrupted_result(tmp_path):
    straight = Script(LOSSES).fit(open_store(str(tmp_path / "a")), Stopping("val_loss", False, 3), 10)
    store = open_store(str(tmp_path / "b"))
    killed = Script(LOSSES, die_at=4)
    with pytest.raises(KeyboardInterrupt):
        killed.fit(store, Stopping("val_loss", False, 3), 10)
    assert killed.trained == [0, 1, 2, 3]
    again = Script(LOSSES)
    resumed = again.fit(store, Stopping("val_loss", False, 3), 10)
    assert again.trained == [4, 5, 6]  # only what was left; the patience counter came back from the checkpoint
    assert resumed.history == straight.history
    assert (resumed.best_epoch, resumed.best_value, resumed.stopped_early, resumed.train_jets) == \
        (straight.best_epoch, straight.best_value, straight.stopped_early, straight.train_jets)
    assert torch.equal(resumed.best_state["weight"], straight.best_state["weight"])
    assert again.model.weight.item() == 6.0  # the model itself is the last epoch's, restored then trained


def test_a_finished_fit_rerun_trains_nothing_and_returns_the_same_result(tmp_path):
    store = open_store(str(tmp_path))
    first = Script(LOSSES).fit(store, Stopping("val_loss", False, 3), 10)
    again = Script(LOSSES)
    second = again.fit(store, Stopping("val_loss", False, 3), 10)
    assert again.trained == [] and second.history == first.history and second.best_epoch == 3


def test_fit_refuses_to_resume_a_run_with_other_settings(tmp_path):
    store = open_store(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        Script(LOSSES, die_at=2).fit(store, Stopping("val_loss", False, 3), 10)
    with pytest.raises(ConfigError, match="holds a run with different settings lr"):
        Script(LOSSES).fit(store, Stopping("val_loss", False, 3), 10, config={"lr": 0.5})


def test_write_outputs_leaves_model_metrics_and_run_json(tmp_path):
    store = open_store(str(tmp_path))
    history = [{"epoch": 0, "val_loss": 0.5, "val_auc": math.nan, "best": True}]
    result = FitResult(history=history, best_state={"weight": torch.full((1, 1), 2.0)}, best_epoch=0,
                       best_value=0.5, stopped_early=False, train_seconds=4.0, train_jets=100)
    blob = {"arch": "resnet", "task": "cls", "mode": "scratch", "label_fraction": 0.5, "seed": 3, "extra": [1, 2]}
    dataset, labels = {"uri": "/d", "id": "abc"}, {"train_jets": 100, "val_jets": 10, "validation": "fraction"}
    resources = {"device": "cpu", "trainable_parameters": 1}
    run = write_outputs(store, blob, result, {"lr": 0.1}, dataset, resources, labels)

    model = load_object(store, "model.pt", sha256=run["model"]["sha256"])  # the checksum run.json names
    assert model["extra"] == [1, 2] and torch.equal(model["state_dict"]["weight"], torch.full((1, 1), 2.0))
    assert run["model"]["sha256"] == sha256_bytes(store.get_bytes("model.pt"))
    training = {"best_epoch": 0, "best_value": 0.5, "epochs_run": 1, "stopped_early": False, "train_seconds": 4.0,
                "train_jets_per_s": 25.0}
    metrics = json.loads(store.get_bytes("metrics.json"))
    assert metrics == {"config": {"lr": 0.1}, "dataset": dataset, "labels": labels, "training": training,
                       "epochs": [{**history[0], "val_auc": None}]}  # strict JSON: NaN is written as null
    on_disk = json.loads(store.get_bytes("run.json"))
    assert on_disk["format"] == records.MODEL and on_disk["training"] == training and on_disk["labels"] == labels
    assert {k: on_disk[k] for k in ("arch", "task", "mode", "label_fraction", "seed")} == \
        {"arch": "resnet", "task": "cls", "mode": "scratch", "label_fraction": 0.5, "seed": 3}
    assert on_disk["provenance"]["device"] == "cpu" and on_disk["resources"] == resources
    blob_back, run_back = records.read_run(str(tmp_path), "model", records.MODEL, "--model", checked=False)  # toy
    assert run_back == on_disk and torch.equal(blob_back["state_dict"]["weight"], model["state_dict"]["weight"])
