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
    assert pt.make_config("tiny", encoder=toy_encoder).model.to_dict() == {"in_channels": 3, "width": 3}
    assert pt.make_config("gpu", encoder=toy_encoder).model.to_dict() == {"in_channels": 3, "width": 4}
    assert pt.make_config("tiny").model == models.VARIANTS["tiny"]  # the ResNet's named widths


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


def _step(*argv) -> int:
    """``jetlib ARGV`` in this process, where the test's network is registered, on a tiny CPU run."""
    from jetlib import cli

    return cli.main([*map(str, argv), "--preset", "tiny", "--device", "cpu", "--epochs", "1"])


ONE_STEP = ["--set", "max_steps_per_epoch=1", "--set", "monitor_bank=0", "--set", "monitor_val=0"]


def test_the_vit_is_sized_from_set_pretrained_fine_tuned_and_evaluated(data, tmp_path):
    """``--set model.NAME=VALUE`` sizes the ViT as it sizes the ResNet: its depth and width from the command
    line, recorded in encoder.pt and model.pt, and rebuilt from them by fine-tuning and evaluation."""
    pre, fine, scratch = (str(tmp_path / name) for name in ("pre", "fine", "scratch"))
    assert _step("pretrain", "--data", data, "--out", pre, "--encoder", "vit", "--set", "model.depth=2",
                 "--set", "model.dim=24", *ONE_STEP) == 0
    blob = load_object(open_store(pre), "encoder.pt")
    assert blob["config"] == {**models.variant("vit", "tiny"), "depth": 2, "dim": 24, "in_channels": 3}
    assert json.loads(open_store(pre).get_bytes("run.json"))["config"]["model"] == blob["config"]
    enc = models.from_blob(blob)
    assert len(enc.blocks.layers) == 2 and enc.num_features == 24

    assert _step("finetune", "--data", data, "--out", fine, "--init", pre, "--task", "cls", "--mode", "finetune") == 0
    tuned = load_object(open_store(fine), "model.pt")
    assert tuned["arch"] == "vit" and tuned["config"] == blob["config"]  # the encoder's size, not the preset's

    assert _step("finetune", "--data", data, "--out", scratch, "--task", "reg", "--mode", "scratch", "--set",
                 "arch=vit", "--set", "model.depth=3", "--set", "model.dim=32", "--set", "model.heads=4") == 0
    model = load_object(open_store(scratch), "model.pt")
    assert model["config"] == {**models.variant("vit", "tiny"), "depth": 3, "dim": 32, "heads": 4, "in_channels": 3}
    net = models.from_blob(model)
    assert len(net.blocks.layers) == 3 and net.blocks.layers[0].self_attn.num_heads == 4
    result = evaluate(data, scratch, str(tmp_path / "results"), device="cpu")
    assert result["model"]["arch"] == "vit" and result["task"] == "reg"


def test_a_registered_encoder_is_sized_from_set_pretrained_and_fine_tuned(data, tmp_path, toy_encoder):
    """A network with no config class of its own is sized by its factory's arguments (``width``)."""
    pre, linear, scratch = (str(tmp_path / name) for name in ("pre", "linear", "scratch"))
    assert _step("pretrain", "--data", data, "--out", pre, "--encoder", toy_encoder, "--set", "model.width=5",
                 "--method", "byol", *ONE_STEP) == 0
    blob = load_object(open_store(pre), "encoder.pt")
    assert blob["config"] == {"in_channels": 3, "width": 5} and blob["state_dict"]["conv.weight"].shape[0] == 5

    assert _step("finetune", "--data", data, "--out", linear, "--init", pre, "--task", "cls", "--mode", "linear") == 0
    model = load_object(open_store(linear), "model.pt")
    assert model["config"] == blob["config"]
    assert torch.equal(model["state_dict"]["conv.weight"], blob["state_dict"]["conv.weight"])

    assert _step("finetune", "--data", data, "--out", scratch, "--task", "cls", "--mode", "scratch",
                 "--set", f"arch={toy_encoder}", "--set", "model.width=6") == 0
    model = load_object(open_store(scratch), "model.pt")
    assert model["config"] == {"in_channels": 3, "width": 6} and models.from_blob(model).num_features == 6


VIT_ARGS = "(its arguments: patch, dim, depth, heads, mlp_ratio, dropout)"


@pytest.mark.parametrize("argv,line", [
    (["pretrain", "--encoder", "vit", "--set", "model.widths=8,8"], f"model.widths: the vit network has no argument "
                                                                    f"'widths' {VIT_ARGS}"),
    (["pretrain", "--encoder", "vit", "--set", "model.depth=two"], "model.depth: must be a valid integer"),
    (["pretrain", "--encoder", "vit", "--set", "model.dim=30"], "model: dim 30 must be divisible by 4 and by heads 2"),
    (["pretrain", "--encoder", "vit", "--set", "model.in_channels=8"],
     f"model.in_channels: the vit network takes the dataset's channel count, not a setting {VIT_ARGS}"),
    (["pretrain", "--encoder", "toy_pool", "--set", "model.width=2.5"], "model.width: must be a valid integer"),
    (["pretrain", "--encoder", "toy_pool", "--set", "model.depth=2"],
     "model.depth: the toy_pool network has no argument 'depth' (its arguments: width)"),
    (["finetune", "--task", "cls", "--mode", "scratch", "--set", "arch=vit", "--set", "model.heads=0"],
     "model.heads: must be greater than or equal to 1"),
    (["finetune", "--task", "cls", "--mode", "scratch", "--set", "model.depth=2"],
     "model.depth: the resnet network has no argument 'depth' (its arguments: stem_width, stem_stride, widths"),
])
def test_a_bad_model_setting_is_one_line_naming_the_field_and_the_network(argv, line, data, tmp_path, capsys,
                                                                         toy_encoder):
    out = tmp_path / "out"
    assert _step(*argv, "--data", data, "--out", out) == 2
    err = capsys.readouterr().err
    network = "toy_pool" if "toy_pool" in argv else "vit" if "vit" in " ".join(argv) else "resnet"
    assert err.count("\n") == 1 and line in err and f"the {network} network" in err, err
    assert not out.exists()  # refused before anything is written
