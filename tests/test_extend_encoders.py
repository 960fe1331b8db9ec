"""Pretraining a network a contributor registers: a toy encoder, one file's worth of code and one
registration, pretrained by every built-in method through the real ``jetlib.pretrain.pretrain``,
fine-tuned from each encoder, evaluated and reported, with no change to jetlib's own files; and the
second shipped encoder, the ViT, pretrained and fine-tuned for one step each."""

import json
import posixpath

import pytest
import torch
from torch import nn

from jetlib import finetune as ft
from jetlib import methods, models
from jetlib import pretrain as pt
from jetlib.checkpoint import load_object
from jetlib.data.store import open_store
from jetlib.evaluate import evaluate
from jetlib.models import Encoder, register_model, unregister_model
from jetlib.report import build_report
from jetlib.study import pretrain_dir, training_dir


@pytest.fixture
def toy_encoder():
    """A conv + global pool with a width per preset, registered for the test and taken away after it."""

    @register_model("toy_pool", variants={"tiny": {"width": 3}})
    class ToyPool(Encoder):
        first_conv = "conv.weight"

        def __init__(self, in_channels: int = 3, width: int = 4):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
            self.num_features = width

        def forward_features(self, x):  # (B, C, H, W) -> (B, width)
            return self.conv(x).relu().mean((2, 3))

    yield "toy_pool"
    unregister_model("toy_pool")


@pytest.fixture(scope="module")
def data(small_dataset):
    return small_dataset


def one_step_pretrain(data, out, **kw) -> dict:
    cfg = pt.make_config("tiny", epochs=1, max_steps_per_epoch=1, monitor_bank=0, monitor_val=0, **kw)
    pt.pretrain(data, out, cfg, device="cpu")
    return json.loads(open_store(out).get_bytes("run.json"))


def test_a_registered_encoder_is_pretrained_by_every_method_fine_tuned_evaluated_and_reported(
        data, tmp_path, toy_encoder):
    run_dir = str(tmp_path / "run")
    builtin, accuracy = list(methods.BUILTIN), {}
    for method in builtin:
        out = pretrain_dir(run_dir, 0, method)
        run = one_step_pretrain(data, out, method=method, encoder=toy_encoder)
        assert run["config"]["encoder"] == "toy_pool" and run["final"]["steps"] == 1, method
        blob = load_object(open_store(out), "encoder.pt", run["encoder"]["sha256"])
        # recorded by name and by the preset's size; the method's heads stay with the method
        assert blob["arch"] == "toy_pool" and blob["config"] == {"in_channels": 3, "width": 3}, method
        assert set(blob["state_dict"]) == {"conv.weight", "conv.bias"}, method
        enc = models.from_blob(blob)
        assert enc.num_features == 3

        train = training_dir(run_dir, "cls", "linear", 1.0, 0, 0, method)
        cfg = ft.make_config("tiny", mode="linear", epochs=1, patience=1, batch_size=256)
        ft.finetune(data, train, cfg, init=out, device="cpu")
        model = load_object(open_store(train), "model.pt")
        assert model["arch"] == "toy_pool" and model["origin"]["method"] == method
        # a linear probe: the pretrained conv is the fine-tuned model's, bit for bit
        assert torch.equal(model["state_dict"]["conv.weight"], blob["state_dict"]["conv.weight"])
        result = evaluate(data, train, posixpath.join(run_dir, "results"), device="cpu")
        assert result["model"]["arch"] == "toy_pool" and result["task"] == "cls"
        accuracy[method] = result["scalars"]["accuracy"]

    report = build_report(run_dir, write=False)
    assert not [m for m in report.missing if "unreadable" in m], report.missing
    for method in builtin:  # one linear probe per method, each read back into the summary (the default unnamed)
        key = "cls_acc_linear" + ("" if method == methods.DEFAULT_METHOD else f"_{method}") + "_f1"
        assert report.summary.get(f"{key}_n") == 1.0, sorted(report.summary)
        assert report.summary[f"{key}_mean"] == pytest.approx(accuracy[method])


def test_a_network_without_variants_builds_its_defaults(toy_encoder):
    assert models.variant(toy_encoder, "gpu") == {} and models.variant(toy_encoder, "tiny") == {"width": 3}
    assert models.step_args("resnet", "tiny", models.VARIANTS["tiny"]) == models.VARIANTS["tiny"].to_dict()


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_the_vit_pretrains_and_fine_tunes_one_step(data, tmp_path, method):
    out = str(tmp_path / "pretrain")
    run = one_step_pretrain(data, out, method=method, encoder="vit")
    blob = load_object(open_store(out), "encoder.pt", run["encoder"]["sha256"])
    assert blob["arch"] == "vit" and blob["config"] == {**models.variant("vit", "tiny"), "in_channels": 3}
    enc = models.from_blob(blob)
    assert torch.equal(enc.state_dict()["patch_embed.weight"], blob["state_dict"]["patch_embed.weight"])

    cfg = ft.make_config("tiny", mode="finetune", epochs=1, patience=1, batch_size=256)
    run = ft.finetune(data, str(tmp_path / "ft"), cfg, init=out, device="cpu")
    model = load_object(open_store(str(tmp_path / "ft")), "model.pt")
    assert model["arch"] == "vit" and run["training"]["epochs_run"] == 1
    # trained end to end: the patch embedding moved from the pretrained one
    assert not torch.equal(model["state_dict"]["patch_embed.weight"], blob["state_dict"]["patch_embed.weight"])


def test_the_study_step_trains_scratch_on_the_runs_encoder(data, tmp_path):
    """The pipeline's ``encoder`` reaches the scratch trainings too (``jetlib.steps.train_step``'s ``arch``),
    so that fine-tuning and its from-scratch baseline compare one network."""
    from jetlib.steps import train_step

    out, run = train_step(data, str(tmp_path / "run"), problem="cls", mode="scratch", fraction=1.0, seed=0,
                          preset="tiny", arch="vit")
    assert out.endswith("cls-scratch-f1-s0") and run["arch"] == "vit"
    assert load_object(open_store(out), "model.pt")["config"] == {**models.variant("vit", "tiny"), "in_channels": 3}
