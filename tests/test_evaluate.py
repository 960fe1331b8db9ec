"""jetlib.evaluate: a hand-built network (no training) scored on a tiny test split, every number checked
against one computed here from the same predictions; the result file's name grammar; never overwriting."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from jetlib import evaluate as ev
from jetlib import models, tasks
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import open_dataset
from jetlib.data.store import open_store
from jetlib.errors import ConfigError, DataError
from jetlib.trainer import FitResult, write_outputs


@pytest.fixture(scope="module")
def data(small_dataset):
    return small_dataset


def saved(data, out, task: str, seed: int = 0, arch: str | None = None, **head):
    """A random tiny ResNet with ``task``'s head written as a training step's output; returns the network."""
    ds = open_dataset(data)
    torch.manual_seed(seed)
    net = models.create("resnet", **models.VARIANTS["tiny"].to_dict()).reset_head(task, **head).eval()
    blob = {"arch": arch or net.arch, "config": net.config(), "task": task, "head": net.head_config, "mode": "scratch",
            "label_fraction": 1.0, "seed": seed, "normalize": "scale", "target": tasks.get(task).normalisation(ds),
            "dataset": ds.manifest["id"], "origin": {"init": None}}
    fit = FitResult([], net.state_dict(), 0, 0.5, False, 2.0, 10)
    write_outputs(open_store(out), blob, fit, {"amp": "off"}, {"uri": ds.uri, "id": ds.manifest["id"]},
                  {"trainable_parameters": 1, "device": "cpu"}, {"train_jets": 10, "val_jets": 4, "validation": "full"})
    return net, ds


def outputs(net, ds):
    """(network output, batches) over the test split, computed here without jetlib.evaluate."""
    outs, batches = [], []
    with torch.no_grad():
        for b in JetLoader(ds, "test", batch_size=7, shuffle=False, normalize="scale"):
            outs.append(net(b.x))
            batches.append(b)
    return outs, batches


def test_a_classifier_is_scored_on_the_test_split(data, tmp_path):
    net, ds = saved(data, str(tmp_path / "m"), "cls", hidden=8)
    outs, batches = outputs(net, ds)
    prob = torch.cat([o.softmax(1)[:, 1] for o in outs]).numpy()
    y = torch.cat([b.y for b in batches]).numpy()
    r = ev.evaluate(data, str(tmp_path / "m"), str(tmp_path / "res"), device="cpu")
    assert r["dataset"]["jets"] == len(y) == ds.rows("test")
    assert r["scalars"]["accuracy"] == pytest.approx(float(((prob >= 0.5) == y).mean()))
    assert r["scalars"]["roc_auc"] == pytest.approx(roc_auc_score(y, prob))
    assert r["regression"] is None and all(r["scalars"][k] is None for k in tasks.get("reg").keys)
    assert r["model"]["arch"] == "resnet" and r["origin"] is None and r["labels"]["validation"] == "full"
    assert (tmp_path / "res" / "cls-scratch-f1-s0.json").exists()


def test_a_regressor_is_scored_in_gev(data, tmp_path):
    net, ds = saved(data, str(tmp_path / "m"), "reg", hidden=8, depth=2)
    outs, batches = outputs(net, ds)
    stats = ds.manifest["stats"]["m0"]
    pred = torch.cat([o[-1] for o in outs]).numpy() * stats["std"] + stats["mean"]  # deepest output, de-normalised
    m0 = torch.cat([b.m0 for b in batches]).numpy()
    r = ev.evaluate(data, str(tmp_path / "m"), None, device="cpu")
    assert r["scalars"]["mae"] == pytest.approx(float(np.abs(pred - m0).mean()), rel=1e-5)
    assert r["scalars"]["rmse"] == pytest.approx(float(np.sqrt(((pred - m0) ** 2).mean())), rel=1e-5)
    assert r["classification"] is None and r["scalars"]["roc_auc"] is None


def test_an_unknown_arch_is_refused_before_anything_is_built(data, tmp_path):
    saved(data, str(tmp_path / "m"), "cls", arch="vgg16", hidden=8)
    with pytest.raises(DataError, match=r"model.pt records arch 'vgg16', expected one of resnet, vgg"):
        ev.evaluate(data, str(tmp_path / "m"), str(tmp_path / "res"), device="cpu")
    assert not (tmp_path / "res").exists()  # nothing half-written


@pytest.mark.parametrize("parts,problem", [
    (("cls", "vgg", 0.5, 1), None),
    (("reg", "vgg", 0.5, 1), "not a task and mode"),  # the VGG baseline is a classifier only
    (("nope", "scratch", 0.5, 1), "not a task and mode"),
    ((["cls"], "scratch", 0.5, 1), "not a task and mode"),
    (("cls", "scratch", 0.0, 1), "expected a number in"),
    (("cls", "scratch", 0.5, True), "expected a whole number"),
    (("cls", "finetune", 0.5, 1, "ab" * 32, "../x"), "expected a lowercase name"),
    (("cls", "finetune", 0.5, 1, "ab" * 32, "VICReg"), "expected a lowercase name"),
])
def test_result_names_are_checked_by_their_grammar(parts, problem):
    if problem is None:
        assert ev.result_name(*parts) == "cls-vgg-f0.5-s1.json"
        assert ev.result_name("reg", "linear", 0.1, 2, "ab" * 32) == "reg-linear-f0.1-s2-simclr-pabababab.json"
        named = ev.result_name("cls", "finetune", 0.1, 0, "cd" * 32, "vicreg")
        assert named == "cls-finetune-f0.1-s0-vicreg-pcdcdcdcd.json"
    else:
        with pytest.raises(DataError, match=problem):
            ev.result_name(*parts)


def test_a_different_result_is_never_written_over_another(data, tmp_path):
    saved(data, str(tmp_path / "a"), "cls", seed=0, hidden=8)
    saved(data, str(tmp_path / "b"), "cls", seed=0, hidden=4)  # same name parts, another model
    res = str(tmp_path / "res")
    first = ev.evaluate(data, str(tmp_path / "a"), res, device="cpu")
    assert ev.evaluate(data, str(tmp_path / "a"), res, device="cpu")["scalars"] == first["scalars"]  # idempotent
    before = (tmp_path / "res" / "cls-scratch-f1-s0.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds the result of another model"):
        ev.evaluate(data, str(tmp_path / "b"), res, device="cpu")
    assert (tmp_path / "res" / "cls-scratch-f1-s0.json").read_bytes() == before
