"""Fine-tuning, the VGG baseline and evaluation, with tiny presets on a learnable toy signal."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from jetlib import baseline as bl
from jetlib import finetune as ft
from jetlib import tasks
from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.splits import SplitConfig
from jetlib.data.store import open_store
from jetlib.errors import ConfigError, DataError
from jetlib.evaluate import SCALAR_KEYS, evaluate
from jetlib.pretrain import make_config as pretrain_config
from jetlib.pretrain import pretrain
from jetlib.trainer import Stopping, fit, predict
from tests.conftest import run_cli, write_toy_h5


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    write_toy_h5(d / "toy.h5", n=240, size=24)  # 24x24: 27x fewer pixels; the 8-channel test keeps 125x125
    # val_floor 3: the 25% subset validates on 3 jets per class of val's 12, so it differs from the full split
    cfg = IngestConfig(split=SplitConfig(label_fractions=(0.25, 1.0), val_floor=3), shard_rows=64,
                       row_group_rows=16, image_size=None)
    uri = ingest(d / "toy.h5", str(d / "store"), cfg=cfg)
    pre = str(d / "pre")
    pretrain(uri, pre, pretrain_config("tiny", epochs=2, **{"model.dropout": 0.0}), device="cpu")
    return uri, pre, d


def quick(task, mode, **kw):
    # a little longer and faster-learning than `tiny`, so that 240 toy jets show a falling loss
    return ft.make_config("tiny", task=task, mode=mode, **{"epochs": 6, "patience": 6, "lr": 3e-3, **kw})


@pytest.mark.parametrize("task", ["cls", "reg"])
@pytest.mark.parametrize("mode", ["finetune", "linear", "scratch"])
def test_every_mode_learns_the_toy(toy, tmp_path, task, mode):
    uri, pre, _ = toy
    run = ft.finetune(uri, str(tmp_path / "m"), quick(task, mode), init=pre if mode != "scratch" else None,
                      device="cpu")
    hist = json.loads((tmp_path / "m" / "metrics.json").read_text())["epochs"]
    assert len(hist) == 6 and run["training"]["epochs_run"] == 6
    assert hist[-1]["train_loss"] < hist[0]["train_loss"], [h["train_loss"] for h in hist]
    if mode == "linear":  # only the head trains
        assert run["resources"]["trainable_parameters"] < run["resources"]["total_parameters"] / 2
    else:
        assert run["resources"]["trainable_parameters"] == run["resources"]["total_parameters"]


def test_finetune_starts_from_the_pretrained_encoder_and_linear_keeps_it(toy, tmp_path):
    from jetlib.checkpoint import load_object

    uri, pre, _ = toy
    encoder = load_object(open_store(pre), "encoder.pt")["state_dict"]
    ft.finetune(uri, str(tmp_path / "lin"), quick("cls", "linear"), init=pre, device="cpu")
    state = load_object(open_store(str(tmp_path / "lin")), "model.pt")["state_dict"]
    for k, v in encoder.items():
        assert torch.equal(state[k], v), k  # frozen: bit-identical
    ft.finetune(uri, str(tmp_path / "fin"), quick("cls", "finetune", epochs=1), init=pre, device="cpu")
    state = load_object(open_store(str(tmp_path / "fin")), "model.pt")["state_dict"]
    assert not torch.equal(state["stem.0.weight"], encoder["stem.0.weight"])  # trained end to end


def test_vgg_baseline_learns_and_evaluates(toy, tmp_path):
    uri, _, _ = toy
    cfg = bl.make_config("tiny", epochs=6, patience=6, max_lr=3e-3, label_fraction=1.0)
    run = bl.baseline(uri, str(tmp_path / "vgg"), cfg, device="cpu")
    hist = json.loads((tmp_path / "vgg" / "metrics.json").read_text())["epochs"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert run["mode"] == "vgg" and run["resources"]["trainable_parameters"] > 0
    result = evaluate(uri, str(tmp_path / "vgg"), str(tmp_path / "res"), device="cpu")
    assert (tmp_path / "res" / "cls-vgg-f1-s0.json").exists()
    assert result["classification"]["n"] == result["dataset"]["jets"] == 48


def test_results_have_identical_keys_across_tasks_and_models(toy, tmp_path):
    uri, pre, _ = toy
    ft.finetune(uri, str(tmp_path / "c"), quick("cls", "scratch", epochs=1), device="cpu")
    ft.finetune(uri, str(tmp_path / "r"), quick("reg", "finetune", epochs=1, label_fraction=0.25), init=pre,
                device="cpu")
    bl.baseline(uri, str(tmp_path / "v"), bl.make_config("tiny", epochs=1), device="cpu")
    results = [evaluate(uri, str(tmp_path / m), str(tmp_path / "res"), device="cpu") for m in "crv"]
    assert len({tuple(sorted(r)) for r in results}) == 1
    assert all(list(r["scalars"]) == list(SCALAR_KEYS) for r in results)
    cls, reg, vgg = results
    assert cls["scalars"]["mae"] is None and reg["scalars"]["roc_auc"] is None and vgg["scalars"]["f1"] is not None
    assert reg["regression"]["mae"] > 0 and reg["label_fraction"] == 0.25 and reg["config"]["init"] == pre
    files = sorted(p.name for p in (tmp_path / "res").iterdir())
    sha8 = reg["origin"]["encoder_sha256"][:8]
    assert files == ["cls-scratch-f1-s0.json", "cls-vgg-f1-s0.json", f"reg-finetune-f0.25-s0-simclr-p{sha8}.json"]
    assert cls["origin"] is None and vgg["origin"] is None and reg["origin"]["init"] == pre
    assert reg["origin"]["pretrain_seed"] == 0
    for r in results:  # strict JSON on disk: no NaN / Infinity tokens
        json.loads((tmp_path / "res" / files[[f.startswith(f"{r['task']}-{r['mode']}") for f in files].index(True)])
                   .read_text(), parse_constant=lambda c: pytest.fail(f"{c} in a result file"))


def test_regression_targets_round_trip_to_gev(toy):
    """predict() de-normalises: a model that outputs the normalised truth reports the truth in GeV."""
    uri, _, _ = toy
    from jetlib.data.loader import JetLoader
    from jetlib.data.manifest import open_dataset

    ds = open_dataset(uri)
    mean, std = ds.manifest["stats"]["m0"]["mean"], ds.manifest["stats"]["m0"]["std"]
    loader = JetLoader(ds, "test", batch_size=16, shuffle=False)
    truth = {}

    class Oracle(nn.Module):
        def forward(self, x):
            b = next(batches)
            truth.update(zip(b.jet.tolist(), b.m0.tolist(), strict=True))
            return ((b.m0 - mean) / std).expand(2, -1)  # (depth, B), normalised

    batches = iter(JetLoader(ds, "test", batch_size=16, shuffle=False))
    p = predict(Oracle(), loader, lambda: torch.autocast("cpu", enabled=False),
                tasks.get("reg").scorer({"mean": mean, "std": std}))
    np.testing.assert_allclose(p["out"], p["m0"], rtol=1e-5)
    assert p["loss"] == pytest.approx(0.0, abs=1e-9)


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.55, 0.9])

    def train_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # the weights remember the epoch
        return {"jets": 1}

    result = fit(open_store(str(tmp_path)), model, opt, None, Stopping("val_accuracy", True, 3), 10,
                 train_epoch, lambda: {"val_accuracy": next(scores)}, {"x": 1}, "ds")
    assert result.stopped_early and len(result.history) == 5  # epochs 2, 3, 4 did not beat 0.7
    assert result.best_epoch == 1 and result.best_value == 0.7
    assert result.best_state["weight"].item() == 1.0
    assert [h["best"] for h in result.history] == [True, True, False, False, False]


def test_killed_finetune_resumes_to_the_same_result(toy, tmp_path, monkeypatch):
    uri, pre, _ = toy
    cfg = quick("cls", "finetune", epochs=4)
    straight = ft.finetune(uri, str(tmp_path / "a"), cfg, init=pre, device="cpu")

    import jetlib.trainer as tr

    real = tr.Checkpoints.save

    def die_after_epoch_1(self, state, epoch):
        real(self, state, epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(tr.Checkpoints, "save", die_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(uri, str(tmp_path / "b"), cfg, init=pre, device="cpu")
    monkeypatch.setattr(tr.Checkpoints, "save", real)
    resumed = ft.finetune(uri, str(tmp_path / "b"), cfg, init=pre, device="cpu")
    assert resumed["model"]["sha256"] == straight["model"]["sha256"]  # identical best weights, bit for bit
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())["epochs"]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())["epochs"]
    assert [h["val_loss"] for h in a] == [h["val_loss"] for h in b]


def test_shape_adapting_load_3_to_8_channels(toy, tmp_path):
    uri, pre, d = toy
    from tests.conftest import write_h5

    write_h5(d / "eight.h5", n=60, layout="jet")
    uri8 = ingest(d / "eight.h5", str(d / "store"))
    run = ft.finetune(uri8, str(tmp_path / "m8"), quick("cls", "finetune", epochs=1), init=pre, device="cpu")
    from jetlib.checkpoint import load_object

    blob = load_object(open_store(str(tmp_path / "m8")), "model.pt")
    assert blob["config"]["in_channels"] == 8
    assert blob["adapted"] == ["stem.0.weight: 3 -> 8 input channels (kernels tiled or folded, response to a "
                               "uniform input kept)"]
    assert run["training"]["epochs_run"] == 1


def test_adapt_input_conv_keeps_the_response_to_uniform_input():
    from jetlib.weights import adapt_input_conv, load_adapted

    w = torch.randn(4, 3, 3, 3)
    w8 = adapt_input_conv(w, 8)
    assert w8.shape == (4, 8, 3, 3)
    torch.testing.assert_close(w8.sum(1), w.sum(1))  # uniform input: same output
    torch.testing.assert_close(w8[:, 3], w[:, 0] / 3)  # channel 0 has three copies (0, 3, 6)
    torch.testing.assert_close(w8[:, 7], w[:, 1] / 3)
    torch.testing.assert_close(w8[:, 5], w[:, 2] / 2)  # channel 2 has two (2, 5)
    w2 = adapt_input_conv(w, 2)  # fewer channels: channel 2 folds into channel 0
    torch.testing.assert_close(w2[:, 0], w[:, 0] + w[:, 2])
    torch.testing.assert_close(w2.sum(1), w.sum(1))
    dst = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 5))
    report = load_adapted(dst, {"0.weight": torch.ones(2, 2), "1.weight": torch.ones(3, 2), "2.bias": torch.ones(1)})
    assert torch.equal(dst[0].weight, torch.ones(2, 2))
    assert "1.weight: shape (3, 2) vs (5, 2), left at random init" in report
    assert "2.bias: not in this network, ignored" in report


@pytest.mark.slow  # a CLI subprocess: ~7 s of CPU
def test_errors_are_clear(toy, tmp_path):
    uri, pre, d = toy
    with pytest.raises(ConfigError, match="needs --init"):
        ft.finetune(uri, str(tmp_path / "x"), quick("cls", "finetune"), device="cpu")
    with pytest.raises(ConfigError, match="label fraction 0.1 is not a subset"):
        ft.finetune(uri, str(tmp_path / "x"), quick("cls", "scratch", label_fraction=0.1), device="cpu")
    from tests.conftest import write_h5

    write_h5(d / "other.h5", n=30)
    other = ingest(d / "other.h5", str(d / "store"))
    ft.finetune(uri, str(tmp_path / "m"), quick("cls", "scratch", epochs=1), device="cpu")
    with pytest.raises(DataError, match="trained on dataset"):
        evaluate(other, str(tmp_path / "m"), None, device="cpu")
    r = run_cli("finetune", "--data", uri, "--task", "cls", "--mode", "linear", "--out", tmp_path / "y",
                "--preset", "tiny")
    assert r.returncode == 2 and r.stderr.strip().endswith("--mode linear needs --init, the output of jetlib pretrain")


@pytest.mark.slow  # two CLI subprocesses: ~18 s of CPU
def test_cli_round_trip(toy, tmp_path):
    uri, pre, _ = toy
    r = run_cli("finetune", "--data", uri, "--task", "reg", "--mode", "scratch", "--label-fraction", "0.25",
                "--out", tmp_path / "m", "--preset", "tiny", "--epochs", "1", "--device", "cpu",
                "--validation", "full")
    assert r.returncode == 0, r.stderr
    r = run_cli("evaluate", "--data", uri, "--model", tmp_path / "m", "--out", tmp_path / "res")
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout)
    assert line["task"] == "reg" and line["mae"] > 0 and "roc_auc" not in line
    (result,) = (json.loads(f.read_text()) for f in (tmp_path / "res").glob("*.json"))
    assert result["labels"]["validation"] == "full" and result["config"]["validation"] == "full"


def test_label_budget_covers_validation_and_is_recorded(toy, tmp_path):
    uri, _, _ = toy
    from jetlib.data.manifest import open_dataset

    ds = open_dataset(uri)
    full_val, budget_val = ds.rows("val"), ds.subset(0.25)["val_rows"]
    assert budget_val == 6 < full_val == 24
    run = ft.finetune(uri, str(tmp_path / "a"), quick("cls", "scratch", epochs=1, label_fraction=0.25),
                      device="cpu")
    assert run["labels"] == {"train_jets": ds.rows("train", 0.25), "val_jets": 6, "validation": "fraction"}
    run = ft.finetune(uri, str(tmp_path / "b"), quick("cls", "scratch", epochs=1, label_fraction=0.25,
                                                      validation="full"), device="cpu")
    assert run["labels"]["val_jets"] == full_val and run["labels"]["validation"] == "full"
    vgg = bl.baseline(uri, str(tmp_path / "v"), bl.make_config("tiny", epochs=1, label_fraction=0.25), device="cpu")
    assert vgg["labels"]["val_jets"] == 6
    result = evaluate(uri, str(tmp_path / "a"), None, device="cpu")
    assert result["labels"] == run["labels"] | {"val_jets": 6, "validation": "fraction"}


def test_dataset_without_val_subsets_falls_back_to_full_validation(toy, tmp_path, caplog):
    """Datasets ingested before val was tiered keep working: the whole val split, a warning, recorded."""
    uri, _, _ = toy
    from jetlib.data.manifest import open_dataset

    ds = open_dataset(uri)
    for sub in ds.manifest["subsets"]:
        for key in ("val_tiers", "val_rows", "val_per_class", "val_class_counts"):
            del sub[key]
    with caplog.at_level("WARNING"):
        run = ft.finetune(ds, str(tmp_path / "old"), quick("cls", "scratch", epochs=1, label_fraction=0.25),
                          device="cpu")
    assert run["labels"]["val_jets"] == ds.rows("val") and run["labels"]["validation"] == "full"
    assert "no validation subsets" in caplog.text


def test_learning_rate_default_is_resolved_per_task_and_recorded(toy, tmp_path):
    uri, _, _ = toy
    assert ft.make_config("tiny", task="cls").learning_rate == 5e-4
    assert ft.make_config("tiny", task="reg").learning_rate == 1e-3
    assert ft.make_config("tiny", task="reg", lr=2e-3).learning_rate == 2e-3
    with pytest.raises(ConfigError, match="lr: must be greater than 0"):
        ft.make_config("tiny", lr=0.0)
    run = ft.finetune(uri, str(tmp_path / "m"), ft.make_config("tiny", task="reg", mode="scratch", epochs=1),
                      device="cpu")
    assert run["config"]["lr"] == 1e-3 and run["config"]["augment_params"]["preset"] == "none"


def test_results_of_two_encoders_sit_side_by_side_and_never_overwrite(toy, tmp_path):
    uri, pre, _ = toy
    pre2 = str(tmp_path / "pre2")
    pretrain(uri, pre2, pretrain_config("tiny", epochs=1, seed=1, **{"model.dropout": 0.0}), device="cpu")
    res = str(tmp_path / "res")
    cfg = quick("cls", "linear", epochs=1)
    ft.finetune(uri, str(tmp_path / "a"), cfg, init=pre, device="cpu")
    ft.finetune(uri, str(tmp_path / "b"), cfg, init=pre2, device="cpu")
    a = evaluate(uri, str(tmp_path / "a"), res, device="cpu")
    b = evaluate(uri, str(tmp_path / "b"), res, device="cpu")
    assert a["origin"]["encoder_sha256"] != b["origin"]["encoder_sha256"] and b["origin"]["pretrain_seed"] == 1
    assert len(list((tmp_path / "res").iterdir())) == 2
    again = evaluate(uri, str(tmp_path / "a"), res, device="cpu")  # same model, same place: idempotent
    assert again["scalars"] == a["scalars"]
    # another model whose name collides (same task, mode, fraction, seed, encoder): refused, file untouched
    name = next(p for p in (tmp_path / "res").iterdir() if a["origin"]["encoder_sha256"][:8] in p.name)
    before = name.read_bytes()
    ft.finetune(uri, str(tmp_path / "c"), quick("cls", "linear", epochs=4), init=pre, device="cpu")
    with pytest.raises(ConfigError, match="already holds the result of another model"):
        evaluate(uri, str(tmp_path / "c"), res, device="cpu")
    assert name.read_bytes() == before


def test_vgg_schedule_runs_its_whole_cycle_unless_asked_to_stop_early(toy, tmp_path, monkeypatch):
    uri, _, _ = toy
    scores = iter([0.9, 0.5, 0.5, 0.5, 0.5])  # never improves after epoch 0

    run = bl.baseline(uri, str(tmp_path / "v"), bl.make_config("tiny", epochs=5), device="cpu")
    hist = json.loads((tmp_path / "v" / "metrics.json").read_text())["epochs"]
    assert run["training"]["epochs_run"] == 5 and not run["training"]["stopped_early"]
    assert hist[-1]["lr"] < hist[0]["lr"] / 100  # the cycle annealed to its end
    real = bl.classification_scores
    monkeypatch.setattr(bl, "classification_scores", lambda p: {**real(p), "val_accuracy": next(scores)})
    early = bl.baseline(uri, str(tmp_path / "e"), bl.make_config("tiny", epochs=5, patience=2), device="cpu")
    assert early["training"]["stopped_early"] and early["training"]["epochs_run"] == 3
