"""Pretraining methods behind one seam: registry, parameter groups, each method trained through the real loop,
BYOL's target (EMA, out of the optimiser, identical across ranks, resumed bit-for-bit), collapse in run.json."""

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from jetlib import methods
from jetlib import pretrain as pt
from jetlib.checkpoint import load_object
from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.store import open_store
from jetlib.errors import ConfigError
from jetlib.losses import byol_momentum
from jetlib.methods.base import Method
from jetlib.models.resnet import ResNet, ResNetConfig
from tests.conftest import pretrain_straight_and_killed, run_cli

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ("barlowtwins", "byol", "simclr", "vicreg")


def _encoder(seed=0):
    torch.manual_seed(seed)
    return ResNet(ResNetConfig(in_channels=2, stem_width=4, widths=(4, 8), strides=(1, 2), groups=2, dropout=0.0))


def _views(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, 9, 9, generator=g), torch.rand(n, 2, 9, 9, generator=g)


SMALL = {"proj_hidden": 8, "proj_dim": 6}


def _small(name):
    """Small heads: the widths each method has (VICReg's and Barlow Twins' layers are all ``proj_dim`` wide)."""
    return {k: v for k, v in SMALL.items() if k in {f.name for f in fields(methods.get(name).Params)}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from tests.conftest import write_h5

    d = tmp_path_factory.mktemp("methods")
    write_h5(d / "jets.h5", n=80, size=24)  # 24x24 jets: the method, not the image size, is under test
    return ingest(d / "jets.h5", str(d / "store"),
                  cfg=IngestConfig(shard_rows=16, row_group_rows=8, image_size=None))


def test_registry_lists_builds_and_checks_every_method():
    assert set(BUILTIN) <= set(methods.METHODS)
    for name in BUILTIN:
        m = methods.create(name, _encoder(), _small(name))
        assert isinstance(m, Method) and m.name == name and isinstance(m.params, methods.get(name).Params)
        assert m.params.proj_dim == 6 and getattr(m.params, "proj_hidden", 8) == 8
    assert methods.params("vicreg").proj_dim == 2048 and methods.params("byol").proj_dim == 256  # paper, scaled
    assert methods.params("simclr", {"temperature": "0.5"}).temperature == 0.5  # strings from --set are typed
    with pytest.raises(ConfigError, match="unknown pretraining method 'moco'.*barlowtwins, byol, simclr, vicreg"):
        methods.create("moco", _encoder())
    with pytest.raises(ConfigError, match="method_params of byol: base_momentum: must be less than or equal to 1"):
        methods.params("byol", {"base_momentum": 1.5})
    with pytest.raises(ConfigError, match="method_params of vicreg: unknown setting 'temperature'"):
        methods.params("vicreg", {"temperature": 0.1})
    with pytest.raises(ValueError, match="already registered"):
        methods.register_method("simclr")(type("Other", (methods.get("vicreg"),), {}))


def test_parameter_groups_decay_weights_only_and_leave_the_target_out():
    simclr = methods.create("simclr", _encoder(), SMALL)
    decay, no_decay = simclr.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert any(p is simclr.loss.log_scale for p in no_decay["params"])  # the temperature: no decay
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(simclr.parameters()))
    byol = methods.create("byol", _encoder(), SMALL)
    grouped = {id(p) for g in byol.param_groups(0.1) for p in g["params"]}
    target = {id(p) for m in (byol.target_encoder, byol.target_projector) for p in m.parameters()}
    assert grouped and not grouped & target  # the momentum target is never stepped by the optimiser
    online = {id(p) for m in (byol.encoder, byol.projector, byol.predictor) for p in m.parameters()}
    assert grouped == online


@pytest.mark.parametrize("name", BUILTIN)
def test_each_method_gives_a_finite_loss_and_trains_its_encoder(name):
    m = methods.create(name, _encoder(), _small(name))
    v1, v2 = _views()
    loss = m(v1, v2)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters() if p.ndim > 1)


def test_byol_target_starts_as_the_online_network_and_follows_it_by_the_cosine_ema():
    m = methods.create("byol", _encoder(), SMALL)
    for t, o in zip(m.target_encoder.parameters(), m.encoder.parameters(), strict=True):
        assert torch.equal(t, o) and not t.requires_grad
    before = {k: v.clone() for k, v in m.target_encoder.state_dict().items()}
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    m.after_step(3, 10)
    tau = byol_momentum(3, 10, m.params.base_momentum)
    assert m.stats() == {"ema_momentum": tau}
    for (k, t), o in zip(m.target_encoder.named_parameters(), m.encoder.parameters(), strict=True):
        torch.testing.assert_close(t, tau * before[k] + (1 - tau) * o, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vicreg", "barlowtwins", "byol"])
def test_each_method_pretrains_through_the_real_loop(dataset, tmp_path, name):
    cfg = pt.make_config("tiny", method=name, epochs=1, max_steps_per_epoch=2)
    final = pt.pretrain(dataset, str(tmp_path / name), cfg, device="cpu")
    run = json.loads((tmp_path / name / "run.json").read_text())
    assert run["config"]["method"] == name and run["method"]["name"] == name
    assert run["method"]["params"]["proj_dim"] == 8 and run["final"] == final  # the tiny preset's sizes
    emb = final["embedding"]
    assert set(emb) == {"std_mean", "std_min", "effective_rank", "collapsed"} and emb["effective_rank"] >= 1
    blob = load_object(open_store(str(tmp_path / name)), "encoder.pt", run["encoder"]["sha256"])
    assert not any(k.startswith(("projector", "target", "predictor")) for k in blob["state_dict"])


@pytest.mark.slow
def test_method_flag_and_its_settings_on_the_cli(dataset, tmp_path):
    r = run_cli("pretrain", "--data", dataset, "--out", tmp_path / "cli", "--preset", "tiny", "--method", "vicreg",
                "--epochs", "1", "--set", "max_steps_per_epoch=1", "--set", "method_params.proj_dim=4",
                "--set", "sim_weight=10", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    run = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert run["config"]["method"] == "vicreg"
    assert run["method"]["params"] == {"proj_dim": 4, "sim_weight": 10.0, "var_weight": 25.0, "cov_weight": 1.0}
    bad = run_cli("pretrain", "--data", dataset, "--out", tmp_path / "bad", "--preset", "tiny", "--method", "byol",
                  "--set", "method_params=4")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "method_params.NAME=VALUE" in bad.stderr
    bad = run_cli("pretrain", "--data", dataset, "--out", tmp_path / "bad", "--method", "moco")
    assert bad.returncode == 2 and "invalid choice: 'moco'" in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_byol_killed_run_resumes_to_identical_weights_and_target(dataset, tmp_path, monkeypatch):
    cfg = pt.make_config("tiny", method="byol", epochs=3, max_steps_per_epoch=2, monitor_bank=0)
    pretrain_straight_and_killed(dataset, tmp_path, cfg, monkeypatch)

    def final_state(out):
        ckpts = open_store(str(out)).child("checkpoints")
        ptr = json.loads(ckpts.get_bytes("latest.json"))
        return load_object(ckpts, ptr["key"])["model"]

    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert any(k.startswith("target_encoder.") for k in a) and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise on CPU, the momentum target included
    assert not torch.equal(a["target_encoder.stem.0.weight"], a["encoder.stem.0.weight"])  # it did move apart


def gloo_job(rank, world):
    """Three BYOL steps under DDP, each rank on its own jets (the shared gloo group, ``tests/gloo.py``)."""
    torch.manual_seed(rank + 7)  # every rank draws differently from here on: the target must not
    model = methods.create("byol", _encoder(seed=0), SMALL)
    net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.param_groups(0.0), lr=0.5)
    for step in range(3):
        v1, v2 = _views(seed=10 * step + rank)  # each rank its own jets
        opt.zero_grad()
        net(v1, v2).backward()
        opt.step()
        model.after_step(step, 3)
    return {k: v.detach() for k, v in model.named_parameters() if k.startswith("target_")}


@pytest.mark.ddp
@pytest.mark.slow  # the session's one gloo run (tests/gloo.py): two processes starting torch, ~19 s of CPU
def test_byol_target_stays_identical_across_gloo_ranks(gloo_ranks):
    """torch v2.14.1, torch/nn/parallel/distributed.py ``DistributedDataParallel``: parameters with
    ``requires_grad=False`` are not synced (the target's), the rest are all-reduced before ``opt.step``;
    the target, updated from the synced online weights, must agree across ranks without a sync of its own.
    (Its BatchNorm running statistics are per rank on CPU, where torch has no SyncBatchNorm; training never
    reads them: the target normalises with batch statistics.)"""
    from tests.gloo import results

    a, b = results(gloo_ranks, "byol_target")
    fresh = dict(methods.create("byol", _encoder(seed=0), SMALL).named_parameters())
    assert a.keys() == b.keys() and len(a) > 4
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["target_encoder.stem.0.weight"], fresh["target_encoder.stem.0.weight"])


class _Collapsing(Method):
    """Zeroes its encoder after every step: a collapsed embedding, for the monitor to find."""

    def forward(self, v1, v2):
        return (self.encoder.forward_features(torch.cat([v1, v2])) ** 2).mean()

    def after_step(self, step, total_steps):
        with torch.no_grad():
            for p in self.encoder.parameters():
                p.zero_()


@pytest.fixture
def collapsing():
    methods.register_method("collapsing")(_Collapsing)
    yield "collapsing"
    methods.unregister_method("collapsing")


@pytest.mark.slow
def test_a_collapsed_embedding_is_recorded_in_run_json_and_logged(dataset, tmp_path, collapsing, caplog):
    cfg = pt.make_config("tiny", method=collapsing, epochs=1, max_steps_per_epoch=1, monitor_bank=0)
    assert cfg.method_params == {}  # the tiny preset's projector sizes do not apply to a method without them
    with caplog.at_level("WARNING", logger="jetlib.pretrain"):
        pt.pretrain(dataset, str(tmp_path / "c"), cfg, device="cpu")
    run = json.loads((tmp_path / "c" / "run.json").read_text())
    assert run["collapse"]["collapsed"] is True and run["collapse"]["epoch"] == 0
    assert run["collapse"]["std_mean"] == 0 and run["final"]["embedding"]["collapsed"] is True
    assert any("embedding collapsed by epoch 0" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_healthy_run_records_no_collapse(dataset, tmp_path):
    cfg = pt.make_config("tiny", epochs=1, max_steps_per_epoch=1, monitor_bank=0)
    pt.pretrain(dataset, str(tmp_path / "h"), cfg, device="cpu")
    run = json.loads((tmp_path / "h" / "run.json").read_text())
    assert "collapse" not in run and run["final"]["embedding"]["collapsed"] is False


@pytest.mark.slow
def test_benchmark_times_every_method_through_the_real_step():
    """benchmarks/pretrain.py --smoke: one JSON line per registered method (relative to SimCLR), then the
    baseline comparison; it times :func:`jetlib.pretrain.train_one_epoch` itself (no copy of the step)."""
    source = (ROOT / "benchmarks" / "pretrain.py").read_text()
    assert "train_one_epoch(" in source and "two_views" not in source  # the real step, not a re-implementation
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrain.py"), "--smoke"], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    per_method = [x for x in lines if x["benchmark"] == "pretrain_method"]
    assert [x["method"] for x in per_method] == ["simclr", *sorted(set(methods.METHODS) - {"simclr"})]
    assert per_method[0]["relative_to_simclr"] == 1.0
    assert all(x["steps"] >= 1 and x["step_ms"] > 0 and x["relative_to_simclr"] > 0 for x in per_method)
    assert [x["benchmark"] for x in lines][-1] == "pretrain" and lines[-1]["jetlib_jets_per_s"] > 0
