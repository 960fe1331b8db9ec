"""Checkpoints and finished runs: plain data only (weights_only), per-rank RNG, one resume, clear errors."""

import json
import random

import numpy as np
import pytest
import torch

from jetlib import checkpoint as ck
from jetlib import records
from jetlib.data.store import open_store, sha256_bytes
from jetlib.errors import ConfigError, DataError, StoreError
from tests.conftest import run_cli


class _RunsCode:
    """Pickles to a call of ``open(marker, "w")``: loading it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _fake_model_run(folder, payload) -> None:
    """A training step's output whose model.pt holds ``payload``, with a matching sha256 in run.json."""
    folder.mkdir(parents=True)
    data = ck.to_bytes(payload)
    (folder / "model.pt").write_bytes(data)
    (folder / "run.json").write_text(json.dumps({
        "format": "jetlib.model/2", "model": {"key": "model.pt", "sha256": sha256_bytes(data), "bytes": len(data)},
        "kind": "resnet", "task": "cls", "mode": "scratch", "label_fraction": 1.0, "seed": 0, "config": {}}))


@pytest.mark.slow  # a CLI subprocess: ~6 s of CPU
def test_a_model_whose_pickle_runs_code_is_refused_by_evaluate(tmp_path, make_h5):
    from jetlib.data.ingest import IngestConfig, ingest

    path, _ = make_h5(n=40)
    dataset = ingest(path, str(tmp_path / "store"), cfg=IngestConfig(shard_rows=20, row_group_rows=10))
    marker = tmp_path / "pwned"
    _fake_model_run(tmp_path / "model", {"kind": "resnet", "state_dict": _RunsCode(marker)})
    r = run_cli("evaluate", "--data", dataset, "--model", tmp_path / "model", "--out", tmp_path / "results",
                "--device", "cpu")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "model.pt: refused to load" in r.stderr
    assert "Unsupported global" in r.stderr and "\x1b" not in r.stderr  # the reason, without torch's colours
    assert not marker.exists()  # the code never ran
    assert not (tmp_path / "results").exists()  # nothing half-written


def test_read_run_errors_name_the_flag_and_exit_codes(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"--init .*: no finished run there \(no run.json\)"):
        records.read_run(str(tmp_path / "empty"), "encoder", records.PRETRAIN, "--init")
    _fake_model_run(tmp_path / "model", {"state_dict": {"w": torch.ones(2)}})
    with pytest.raises(ConfigError, match=r"is 'jetlib.model/2', expected a jetlib.pretrain/2 run"):
        records.read_run(str(tmp_path / "model"), "encoder", records.PRETRAIN, "--init")
    blob, run = records.read_run(str(tmp_path / "model"), "model", records.MODEL, "--model", checked=False)  # toy
    assert torch.equal(blob["state_dict"]["w"], torch.ones(2)) and run["task"] == "cls"
    (tmp_path / "model" / "model.pt").write_bytes(ck.to_bytes({"state_dict": {"w": torch.zeros(2)}}))
    with pytest.raises(DataError, match="checksum mismatch"):
        records.read_run(str(tmp_path / "model"), "model", records.MODEL, "--model")
    # a store that cannot be reached is a store failure (exit 3), not bad input
    monkeypatch.setenv("JETLIB_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("JETLIB_S3_RETRIES", "1")
    with pytest.raises(StoreError) as e:
        records.read_run("s3://bucket/run", "model", records.MODEL, "--model")
    assert e.value.exit_code == 3


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    store = open_store(str(tmp_path))
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in NumPy's state
    ck.save_object(store, "rng.pt", {"rng": [ck.rng_state()]})
    expected = (random.random(), np.random.normal(), np.random.rand(3), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ck.set_rng_state(ck.load_object(store, "rng.pt")["rng"][0])
    got = (random.random(), np.random.normal(), np.random.rand(3), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1]
    assert np.array_equal(got[2], expected[2]) and torch.equal(got[3], expected[3])


def _tiny_training(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    return model, opt, sched


def _step(model, opt, sched):
    loss = model(torch.randn(4, 3)).square().mean()  # draws from the RNG, as augmentations do
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def test_resume_restores_model_optimizer_scheduler_and_rng(tmp_path):
    store = open_store(str(tmp_path))
    ckpts = ck.Checkpoints(store.child("checkpoints"))
    model, opt, sched = _tiny_training()
    _step(model, opt, sched)
    ck.Checkpoints.save(ckpts, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "epoch": 0, "rng": ck.rng_states(),
                                "config": {"lr": 0.1, "widths": (4, 8)}, "dataset": "d1"}, 0)
    _step(model, opt, sched)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    fresh, fresh_opt, fresh_sched = _tiny_training(seed=7)
    torch.manual_seed(99)
    saved = ck.resume(ckpts, config={"lr": 0.1, "widths": (4, 8)}, dataset_id="d1", model=fresh,
                      optimizer=fresh_opt, scheduler=fresh_sched)
    assert saved["epoch"] == 0
    _step(fresh, fresh_opt, fresh_sched)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, straight[k]), k
    assert fresh_sched.get_last_lr() == sched.get_last_lr()

    with pytest.raises(ConfigError, match="different settings lr: resume with the same command"):
        ck.resume(ckpts, config={"lr": 0.2, "widths": (4, 8)}, dataset_id="d1", model=fresh, optimizer=fresh_opt)
    with pytest.raises(ConfigError, match="different dataset"):
        ck.resume(ckpts, config={"lr": 0.1, "widths": (4, 8)}, dataset_id="d2", model=fresh, optimizer=fresh_opt)
    assert ck.resume(ck.Checkpoints(store.child("none")), config={}, dataset_id="d1", model=fresh,
                     optimizer=fresh_opt) is None


@pytest.mark.parametrize("store_kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
@pytest.mark.parametrize("key,problem", [
    ("../../victim/checkpoints/epoch-0000.pt", "climbs out with '..'"),
    ("/victim/checkpoints/epoch-0000.pt", "is absolute"),
    ("metrics.json", "is not a name jetlib writes there"),
])
def test_a_crafted_pointer_is_refused_before_anything_is_read_or_deleted(store_kind, key, problem, tmp_path,
                                                                         request):
    """A pointer once made a resume load, and the next save delete, another run's checkpoint."""
    root = open_store(str(tmp_path / "root") if store_kind == "local" else request.getfixturevalue("s3_env"))
    victim = root.child("victim/checkpoints")
    ck.Checkpoints(victim).save({"epoch": 0}, 0)
    data = victim.get_bytes("epoch-0000.pt")
    run = root.child("run/checkpoints")
    run.put_bytes("latest.json", json.dumps({"epoch": 0, "key": key, "sha256": sha256_bytes(data)}).encode())
    ckpts = ck.Checkpoints(run)
    with pytest.raises(DataError, match=problem):
        ckpts.latest()
    with pytest.raises(DataError, match=problem):
        ckpts.save({"epoch": 1}, 1)
    assert victim.get_bytes("epoch-0000.pt") == data  # still there, untouched


def test_a_pointer_with_a_crafted_sha256_is_refused(tmp_path):
    store = open_store(str(tmp_path))
    store.put_bytes("latest.json", json.dumps({"epoch": 0, "key": "epoch-0000.pt", "sha256": "../x"}).encode())
    with pytest.raises(DataError, match="is not 64 lowercase hex digits"):
        ck.Checkpoints(store).latest()
