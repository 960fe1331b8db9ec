"""Extending jetlib as a contributor would: a toy encoder and a toy task, each a few lines and one
registration, trained for one step through ``jetlib.finetune``, scored by ``jetlib.evaluate`` and
reported by ``jetlib.report``, with no change to jetlib's own files (the models' and tasks' registries)."""

import numpy as np
import pytest
import torch
from torch import nn

from jetlib import finetune as ft
from jetlib import models, tasks
from jetlib.checkpoint import load_object
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import open_dataset
from jetlib.data.store import open_store
from jetlib.evaluate import evaluate
from jetlib.models import Encoder, register_model, unregister_model
from jetlib.report import build_report
from jetlib.tasks import Classification, register_task, unregister_task


@pytest.fixture
def toy_encoder():
    """A conv + global pool, registered for the test and taken away after it."""

    @register_model("toy_conv")
    class ToyConv(Encoder):
        def __init__(self, in_channels: int = 3, width: int = 4):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
            self.num_features = width

        def forward_features(self, x):  # (B, C, H, W) -> (B, width)
            return self.conv(x).relu().mean((2, 3))

    yield "toy_conv"
    unregister_model("toy_conv")


@pytest.fixture
def toy_task():
    """Is the jet's pT above the train split's median? A classification with its own truth."""

    @register_task("pt_high")
    class PtAboveMedian(Classification):
        title = "Jet pT above the median"
        baselines = ()
        truth_key = None  # computed by truth() below, not a batch field

        def normalisation(self, ds):
            return {"median": ds.manifest["stats"]["pt"]["p50"]}

        def truth(self, batch, norm):
            return (batch.pt > norm["median"]).long()

    yield "pt_high"
    unregister_task("pt_high")


@pytest.fixture(scope="module")
def data(small_dataset):
    return small_dataset


def one_step(data, out, **kw):
    """One epoch of one batch (the batch holds the whole train split): a single optimiser step."""
    cfg = ft.make_config("tiny", mode="scratch", epochs=1, patience=1, batch_size=256, **kw)
    run = ft.finetune(data, out, cfg, device="cpu")
    assert run["training"]["epochs_run"] == 1 and run["labels"]["train_jets"] <= 256
    return run


def test_a_registered_encoder_and_task_train_evaluate_and_report(data, tmp_path, toy_encoder, toy_task):
    run_dir = tmp_path / "run"
    enc_out, task_out = str(run_dir / "cls-scratch-f1-s0"), str(run_dir / "pt_high-scratch-f1-s0")
    one_step(data, enc_out, task="cls", arch=toy_encoder)
    one_step(data, task_out, task=toy_task)
    results = [evaluate(data, out, str(run_dir / "results"), device="cpu") for out in (enc_out, task_out)]
    ds = open_dataset(data)
    jets = ds.rows("test")

    # the toy encoder: recorded by its arch, rebuilt by from_blob, scored like any classifier
    enc = results[0]
    assert enc["model"]["arch"] == "toy_conv" and enc["classification"]["n"] == jets
    blob = load_object(open_store(enc_out), "model.pt")
    # every argument it was built with, defaults included: a later change of a default cannot change the rebuild
    assert blob["arch"] == "toy_conv" and blob["config"] == {"in_channels": 3, "width": 4}
    net = models.from_blob(blob)
    assert isinstance(net.head, type(tasks.get("cls").head(4))) and net.num_features == 4

    # the toy task: its own truth (pT above the median) is what the result scores
    res = results[1]
    assert res["task"] == "pt_high" and res["model"]["arch"] == "resnet"
    blob = load_object(open_store(task_out), "model.pt")
    net = models.from_blob(blob).eval()
    median = ds.manifest["stats"]["pt"]["p50"]
    probs, truth = [], []
    with torch.no_grad():
        for batch in JetLoader(ds, "test", batch_size=64, shuffle=False, normalize=blob["normalize"]):
            probs.append(net(batch.x).softmax(1)[:, 1].numpy())
            truth.append((batch.pt > median).numpy())
    probs, truth = np.concatenate(probs), np.concatenate(truth)
    assert res["scalars"]["accuracy"] == pytest.approx(float(((probs >= 0.5) == truth).mean()))
    assert res["classification"]["confusion_matrix"][1][0] + res["classification"]["confusion_matrix"][1][1] \
        == int(truth.sum())  # the positives are the high-pT jets, not the quarks
    assert set(results[0]["scalars"]) == set(tasks.scalar_keys())

    # the report reads both with no branch for either
    report = build_report(str(run_dir), write=False)
    assert not [m for m in report.missing if "unreadable" in m], report.missing
    assert "Jet pT above the median: test split" in report.markdown
    # accuracy: defined whatever one step of training gives (AUC needs both classes and distinct scores)
    assert report.summary["pt_high_acc_scratch_f1_n"] == 1.0 and report.summary["cls_acc_scratch_f1_n"] == 1.0
    assert report.summary["pt_high_acc_scratch_f1_mean"] == pytest.approx(res["scalars"]["accuracy"])


def test_registrations_are_refused_twice_and_gone_after_teardown(toy_encoder, toy_task):
    assert "toy_conv" in models.ARCHS and "pt_high" in tasks.TASKS
    with pytest.raises(ValueError, match="already registered"):
        register_model("toy_conv")(Encoder)
    with pytest.raises(ValueError, match="already registered"):
        register_task("pt_high")(Classification)
    vgg = models.create("vgg", widths=(4, 4), depths=(1, 1), heads=2, head_hidden=4)
    from jetlib.errors import ConfigError

    with pytest.raises(ConfigError, match="heads for cls only"):
        vgg.reset_head("pt_high")  # the VGG ensemble is a quark/gluon classifier only


def test_builtin_registries_only_outside_the_toy_fixtures():
    assert list(models.ARCHS) == list(models.BUILTIN) == ["resnet", "vgg", "vit"]
    assert list(tasks.TASKS) == list(tasks.BUILTIN) == ["cls", "reg"]
