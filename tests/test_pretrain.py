import importlib.metadata
import json
import math

import pytest
import torch

from jetlib import pretrain as pt
from jetlib.checkpoint import load_object
from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.store import open_store
from jetlib.errors import ConfigError, TrainingError
from tests.conftest import pretrain_straight_and_killed, run_cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from tests.conftest import write_h5

    d = tmp_path_factory.mktemp("pre")
    write_h5(d / "jets.h5", n=80)
    return ingest(d / "jets.h5", str(d / "store"), cfg=IngestConfig(shard_rows=16, row_group_rows=8))


def tiny(**kw):
    return pt.make_config("tiny", **kw)


def encoder_state(out):
    return load_object(open_store(out), "encoder.pt")["state_dict"]


def test_tiny_run_writes_everything(dataset, tmp_path):
    out = str(tmp_path / "run")
    final = pt.pretrain(dataset, out, tiny(log_interval=2), device="cpu")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run["format"] == "jetlib.pretrain/2" and run["final"] == final
    assert run["provenance"]["packages"]["torch"] == importlib.metadata.version("torch")
    assert run["provenance"]["device"] == "cpu" and run["provenance"]["jetlib"] == run["jetlib_version"]
    assert run["augment_params"]["preset"] == "seed" and run["augment_params"]["crop_min_area"] == 0.8
    # 56 train jets / 16 = 3 steps per epoch; the loss is read back every 2nd step and at the last one
    assert [[s for s, _ in e["step_losses"]] for e in metrics["epochs"]] == [[1, 2], [4, 5]]
    assert all(math.isfinite(v) for e in metrics["epochs"] for _, v in e["step_losses"])
    assert "step_losses" not in final
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    for e in metrics["epochs"]:
        assert {"loss", "temperature", "lr", "jets_per_s", "knn_accuracy"} <= set(e)
        assert math.isfinite(e["loss"]) and 0 <= e["knn_accuracy"] <= 1
    assert metrics["config"]["preset"] == "tiny" and metrics["config"]["model"]["widths"] == [4, 4, 8, 8, 8, 8, 16]
    blob = load_object(open_store(out), "encoder.pt", run["encoder"]["sha256"])
    assert blob["config"]["in_channels"] == 3 and blob["arch"] == "resnet"
    ptr = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert ptr["epoch"] == 1 and [p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt")] == [
        "epoch-0001.pt"]


def test_killed_run_resumes_to_identical_weights(dataset, tmp_path, monkeypatch):
    cfg = tiny(epochs=3)
    pretrain_straight_and_killed(dataset, tmp_path, cfg, monkeypatch)

    a, b = encoder_state(str(tmp_path / "straight")), encoder_state(str(tmp_path / "resumed"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise on CPU
    ma = json.loads((tmp_path / "straight" / "metrics.json").read_text())["epochs"]
    mb = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["epochs"]
    assert [e["loss"] for e in ma] == [e["loss"] for e in mb]


def test_resuming_with_other_settings_is_refused(dataset, tmp_path):
    quick = {"epochs": 1, "max_steps_per_epoch": 1, "monitor_bank": 0}
    pt.pretrain(dataset, str(tmp_path / "r"), tiny(**quick), device="cpu")
    with pytest.raises(ConfigError, match="different settings lr"):
        pt.pretrain(dataset, str(tmp_path / "r"), tiny(lr=0.5, **quick), device="cpu")


def test_non_finite_loss_stops_with_one_line(dataset, tmp_path, monkeypatch):
    from jetlib.losses import InfoNCELoss

    monkeypatch.setattr(InfoNCELoss, "forward", lambda self, a, b: (a.sum() + b.sum()) * float("nan"))
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at epoch 0, step 0"):
        pt.pretrain(dataset, str(tmp_path / "nan"), tiny(), device="cpu")


def test_learning_rate_schedule():
    peak, warm, total = 1e-3, 10, 100
    lrs = [pt.lr_at(s, total, warm, peak) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / warm) and lrs[warm - 1] == pytest.approx(peak)
    assert all(a < b for a, b in zip(lrs[:warm - 1], lrs[1:warm], strict=False))  # rising
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:], strict=False))  # then falling
    assert lrs[55] == pytest.approx(peak / 2) and pt.lr_at(total, total, warm, peak) == 0
    # the loop indexes a schedule computed once, with the same values
    assert pt.lr_schedule(total, warm, peak).tolist() == lrs


def test_presets_and_overrides():
    cfg = pt.make_config("cpu", lr="0.01", **{"model.dropout": "0.0"})
    assert cfg.preset == "cpu" and cfg.lr == 0.01 and cfg.model.dropout == 0.0
    assert cfg.model.widths[-1] == 128 and pt.make_config("gpu").model.widths[-1] == 512
    assert pt.make_config("gpu").batch_size == 256 and pt.make_config("gpu").epochs == 100
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        pt.make_config("cpu", learning_rate="1")
    with pytest.raises(ConfigError, match="unknown preset"):
        pt.make_config("laptop")
    # a method's hyperparameters live with it, reached through method_params (or their own name)
    cfg = pt.make_config("tiny", temperature="0.2", **{"method_params.proj_dim": "4"})
    assert (cfg.method, cfg.method_params) == ("simclr", {"proj_hidden": 16, "proj_dim": 4, "temperature": 0.2})
    assert pt.make_config("gpu").method_params == {}
    with pytest.raises(ConfigError, match="method_params of simclr: temperature: must be greater than 0"):
        pt.make_config("tiny", temperature="0")
    with pytest.raises(ConfigError, match="method_params of simclr: unknown setting 'momentum'"):
        pt.make_config("tiny", **{"method_params.momentum": "0.9"})
    with pytest.raises(ConfigError, match="unknown pretraining method 'mocov9'"):
        pt.make_config("tiny", method="mocov9")


def test_batch_larger_than_the_data(dataset, tmp_path):
    with pytest.raises(ConfigError, match="larger than the train split"):
        pt.pretrain(dataset, str(tmp_path / "big"), tiny(batch_size=4096), device="cpu")


@pytest.mark.slow  # a CLI subprocess: ~9 s of CPU
def test_physics_augmentation_and_cli(dataset, tmp_path):
    r = run_cli("pretrain", "--data", dataset, "--out", tmp_path / "cli", "--preset", "tiny", "--augment",
                "physics", "--epochs", "2", "--set", "monitor_bank=0")
    assert r.returncode == 0, r.stderr
    final = json.loads(r.stdout)
    assert final["epoch"] == 1 and "knn_accuracy" not in final
    cfg = json.loads((tmp_path / "cli" / "run.json").read_text())["config"]
    assert cfg["augment"] == "physics" and cfg["monitor_bank"] == 0


@pytest.fixture(scope="module")
def even_dataset(tmp_path_factory):
    """64 train jets in 8 row groups of 8: one process and each of 2 ranks see whole, equal shares."""
    from jetlib.data.splits import SplitConfig
    from tests.conftest import write_h5

    d = tmp_path_factory.mktemp("even")
    write_h5(d / "jets.h5", n=90)
    uri = ingest(d / "jets.h5", str(d / "store"),
                 cfg=IngestConfig(split=SplitConfig(label_fractions=(0.5, 1.0)), shard_rows=16, row_group_rows=8))
    shards = json.loads(open_store(uri).get_bytes("manifest.json"))["splits"]["train"]["shards"]
    assert [s["rows"] for s in shards] == [16] * 4
    return uri


def _torchrun(*args, nproc=2, popen=None):
    import os
    import subprocess
    import sys

    from tests.conftest import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(free_port()), "-m", "jetlib", "pretrain", *map(str, args), "--device", "cpu"]
    env = {**os.environ, "JETLIB_PROGRESS": "0", "OMP_NUM_THREADS": "1", "JETLIB_DIST_TIMEOUT_S": "120"}
    if popen is not None:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc), children first."""
    from pathlib import Path

    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return [d for c in children for d in _process_tree(c)] + [pid]


def _metrics(out):
    return json.loads(open_store(str(out)).get_bytes("metrics.json"))["epochs"]


@pytest.mark.ddp
@pytest.mark.slow
def test_torchrun_matches_one_process_on_the_same_global_batch(even_dataset, tmp_path):
    # No randomness left (no augmentation, no dropout) and a global batch of the whole train split,
    # so 2 ranks x 32 jets and 1 process x 64 jets compute the same loss and the same update, up to
    # the order of float sums. A missing gradient sync, a loss that ignores the other rank's
    # negatives or a per-rank learning rate would each break this.
    flags = ["--data", even_dataset, "--preset", "tiny", "--epochs", "3", "--set", "augment=none",
             "--set", "batch_size=64", "--set", "model.dropout=0.0", "--set", "monitor_bank=0"]
    r = _torchrun(*flags, "--out", tmp_path / "ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(r.stdout.strip().splitlines()) == 1  # only rank 0 prints the result
    r1 = run_cli("pretrain", *flags, "--out", tmp_path / "one", "--device", "cpu", env={"OMP_NUM_THREADS": "1"})
    assert r1.returncode == 0, r1.stderr[-3000:]
    run = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert run["world_size"] == 2 and json.loads((tmp_path / "one" / "run.json").read_text())["world_size"] == 1
    ddp, one = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "one")
    steps_ddp = [s for e in ddp for s in e["step_losses"]]
    steps_one = [s for e in one for s in e["step_losses"]]
    assert [s for s, _ in steps_ddp] == [s for s, _ in steps_one] == [0, 1, 2]
    for (_, a), (_, b) in zip(steps_ddp, steps_one, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    assert steps_ddp[-1][1] < steps_ddp[0][1]  # and it learns
    a, b = encoder_state(str(tmp_path / "ddp")), encoder_state(str(tmp_path / "one"))
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k


@pytest.mark.ddp
@pytest.mark.slow
def test_killed_2_process_run_resumes_bitwise(even_dataset, tmp_path):
    import contextlib
    import os
    import signal
    import time

    flags = ["--data", even_dataset, "--preset", "tiny", "--epochs", "4"]
    r = _torchrun(*flags, "--out", tmp_path / "straight")
    assert r.returncode == 0, r.stderr[-3000:]

    # kill -9 torchrun and its workers as soon as the first checkpoint is committed
    killed = tmp_path / "killed"
    proc = _torchrun(*flags, "--out", killed, popen=True)
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 240
    while not pointer.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in _process_tree(proc.pid):  # torchrun starts its workers in sessions of their own
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.communicate()
    assert pointer.exists() and not (killed / "run.json").exists(), "the run ended before it could be killed"
    assert json.loads(pointer.read_text())["epoch"] < 3

    r = _torchrun(*flags, "--out", killed)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = encoder_state(str(tmp_path / "straight")), encoder_state(str(killed))
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise: rank 1 drew its own augmentations after the resume
    assert [e["step_losses"] for e in _metrics(tmp_path / "straight")] == [e["step_losses"] for e in _metrics(killed)]


@pytest.mark.s3
def test_four_epochs_to_s3_leave_one_checkpoint(dataset, s3_env):
    pt.pretrain(dataset, s3_env, tiny(epochs=4, monitor_bank=0, max_steps_per_epoch=1), device="cpu")
    assert open_store(s3_env).list("checkpoints") == ["checkpoints/epoch-0003.pt", "checkpoints/latest.json"]
