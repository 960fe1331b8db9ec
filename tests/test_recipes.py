"""Each method's own recipe (optimiser, learning rate and its batch scaling, weight decay, warmup, EMA), which
applies unless the user sets the value: defaults < the method's recipe < preset < recipe file < flags."""

import json
import math
import re
from dataclasses import fields

import pytest
import torch

from jetlib import methods
from jetlib import pretrain as pt
from jetlib.checkpoint import load_object
from jetlib.data.store import open_store
from jetlib.errors import ConfigError
from jetlib.methods.lars import LARS
from jetlib.tune.recipe import FORMAT, read_recipe, recipe_doc
from tests.conftest import run_cli
from tests.test_methods import dataset  # noqa: F401  (the module-scoped 24x24 dataset)

BUILTIN = ("barlowtwins", "byol", "simclr", "vicreg")


def test_each_methods_recipe_replaces_the_defaults_and_names_its_sources():
    """The numbers a recipe sets are in its module's docstring, beside the file they come from."""
    expected = {"simclr": ("adamw", 1e-3, 0, 1e-4), "byol": ("lars", 1.0, 256, 1e-5),
                "vicreg": ("lars", 0.3, 256, 1e-4), "barlowtwins": ("adamw", 1e-3, 0, 1e-4)}
    for name in BUILTIN:
        cfg = pt.make_config("gpu", method=name)
        assert (cfg.optimizer, cfg.lr, cfg.lr_batch, cfg.weight_decay) == expected[name]
        assert cfg.warmup_epochs == 10
        doc = __import__(methods.get(name).__module__, fromlist=["_"]).__doc__
        numbers = {float(t) for t in re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", doc)}
        for key, value in methods.get(name).recipe.items():
            assert (value.upper() in doc.upper()) if key == "optimizer" else (float(value) in numbers), (name, key, value)
        if methods.get(name).recipe:
            assert f"scripts/pretrain/cifar/{'barlow' if name == 'barlowtwins' else name}.yaml" in doc
    assert methods.params("byol").base_momentum == 0.99  # solo-learn's CIFAR base_tau


def test_peak_learning_rate_scales_linearly_with_the_batch_for_a_per_256_recipe():
    cfg = pt.make_config("gpu", method="vicreg", batch_size=512)
    assert pt.peak_lr(cfg) == pytest.approx(0.6)
    assert pt.peak_lr(pt.make_config("gpu", method="simclr", batch_size=512)) == 1e-3  # AdamW: as given
    assert pt.lr_schedule(20, 2, pt.peak_lr(cfg)).max() == pytest.approx(0.6)


def test_precedence_defaults_recipe_preset_recipe_file_flags():
    recipe = recipe_doc("byol", {"lr": 0.5, "weight_decay": 3e-5, "method_params": {"base_momentum": 0.995}})
    gpu = pt.make_config("gpu", method="byol")
    assert gpu.warmup_epochs == 10 and gpu.lr == 1.0  # the method's recipe over the defaults
    cpu = pt.make_config("cpu", method="byol")
    assert cpu.warmup_epochs == 1 and cpu.optimizer == "lars"  # the preset's warmup wins, the rest is the recipe
    tuned = pt.make_config("cpu", recipe)
    assert (tuned.method, tuned.lr, tuned.weight_decay, tuned.method_params["base_momentum"]) == \
        ("byol", 0.5, 3e-5, 0.995)
    assert tuned.warmup_epochs == 1 and tuned.lr_batch == 256
    mine = pt.make_config("cpu", recipe, lr=0.2, base_momentum="0.9", weight_decay="0")
    assert (mine.lr, mine.weight_decay, mine.method_params["base_momentum"]) == (0.2, 0.0, 0.9)
    assert pt.make_config("gpu", method="byol", optimizer="adamw", lr_batch="0").optimizer == "adamw"
    with pytest.raises(ConfigError, match="the recipe is byol's, not vicreg's"):
        pt.make_config("cpu", recipe, method="vicreg")


def test_a_recipe_file_is_checked(tmp_path):
    for doc, match in (({"method": "byol", "values": {}}, "not a jetlib recipe"),
                       ({"format": FORMAT, "method": "byol", "values": {"epochs": 3}}, "not epochs"),
                       ({"format": FORMAT, "values": {}}, "names its")):
        (tmp_path / "r.json").write_text(json.dumps(doc))
        with pytest.raises(ConfigError, match=match):
            read_recipe(str(tmp_path / "r.json"))
    with pytest.raises(ConfigError, match="no such file"):
        read_recipe(str(tmp_path / "missing.json"))


def naive_lars(w, grads, lr, wd, eta=0.02, momentum=0.9):
    """solo-learn solo/utils/lars.py (Lightning Bolts), ``LARS.step`` with clip_lars_lr and exclude_bias_n_norm,
    written out for one weight matrix in float64 over a sequence of gradients."""
    w, buf = w.double().clone(), None
    for g in grads:
        g = g.double()
        p_norm, g_norm = w.norm(), g.norm()
        lars_lr = min(float(eta * p_norm / (g_norm + p_norm * wd + 1e-8)) / lr, 1.0)
        d = (g + wd * w) * lars_lr
        buf = d.clone() if buf is None else buf * momentum + d
        w = w - lr * buf
    return w


@pytest.mark.parametrize("lr", [0.05, 5.0])  # the trust ratio clipped at 1, and not
def test_lars_matches_solo_learns_update_and_leaves_vectors_to_plain_sgd(lr):
    g = torch.Generator().manual_seed(0)
    w0, b0 = torch.randn(6, 5, generator=g), torch.randn(5, generator=g)
    grads = [(torch.randn(6, 5, generator=g), torch.randn(5, generator=g)) for _ in range(3)]
    w, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone())
    opt = LARS([{"params": [w], "weight_decay": 1e-3}, {"params": [b], "weight_decay": 0.0}], lr=lr)
    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
    torch.testing.assert_close(w.detach().double(), naive_lars(w0, [gw for gw, _ in grads], lr, 1e-3))
    # the buffers g1, 0.9 g1 + g2, 0.81 g1 + 0.9 g2 + g3, each stepped: no decay, no trust ratio
    sgd = b0.double() - lr * (grads[0][1] * 2.71 + grads[1][1] * 1.9 + grads[2][1]).double()
    torch.testing.assert_close(b.detach().double(), sgd)


def test_a_lars_recipe_pretrains_resumes_and_records_its_optimiser(dataset, tmp_path):  # noqa: F811
    out = tmp_path / "byol"
    cfg = pt.make_config("tiny", method="byol", max_steps_per_epoch=2)
    final = pt.pretrain(dataset, str(out), cfg, device="cpu")
    assert math.isfinite(final["loss"])
    newest = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))[-1]
    ckpt = load_object(open_store(str(out / "checkpoints")), newest)
    assert ckpt["config"]["optimizer"] == "lars"
    assert "momentum_buffer" in next(iter(ckpt["optimizer"]["state"].values()))  # LARS's state, not AdamW's
    metrics = json.loads((out / "metrics.json").read_text())
    assert max(e["lr"] for e in metrics["epochs"]) <= pt.peak_lr(cfg) == pytest.approx(16 / 256)


@pytest.mark.slow  # two CLI subprocesses: ~7 s of CPU
def test_pretrain_recipe_flag_round_trip(dataset, tmp_path):  # noqa: F811
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(recipe_doc("vicreg", {"lr": 0.123, "method_params": {"cov_weight": 2.0}})))
    out = tmp_path / "run"
    r = run_cli("pretrain", "--data", dataset, "--out", str(out), "--preset", "tiny", "--recipe", str(recipe),
                "--set", "max_steps_per_epoch=1", "--set", "weight_decay=0.01", "--epochs", "1")
    assert r.returncode == 0, r.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["method"] == "vicreg" and run["config"]["lr"] == 0.123
    assert run["config"]["weight_decay"] == 0.01 and run["method"]["params"]["cov_weight"] == 2.0
    bad = run_cli("pretrain", "--data", dataset, "--out", str(tmp_path / "x"), "--preset", "tiny",
                  "--recipe", str(tmp_path / "nope.json"))
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_recipe_fields_are_config_fields():
    from jetlib.tune.recipe import TUNABLE

    assert set(TUNABLE) <= {f.name for f in fields(pt.PretrainConfig)}
