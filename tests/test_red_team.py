"""The classes of a hostile reading of what the steps are given and what they read back, one test each:
a record that chose a path, records with missing or mistyped keys, memory bombs, values no run should
accept, a malformed environment. Each is refused in one line with its exit code, and nothing is written
where it should not be (no claim, no folder, nothing in the working directory).

The records are written by jetlib's own writers (``records.write_run``, ``checkpoint.save_object``)
around real tiny networks, then tampered with, as a writer of the bucket could."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jetlib import cli, models, records
from jetlib.checkpoint import save_object
from jetlib.data.manifest import open_dataset
from jetlib.data.store import open_store
from jetlib.errors import ConfigError, DataError, ResourceError
from jetlib.models.resnet import VARIANTS
from jetlib.schemas.records import Result, check_record
from jetlib.steps import step_errors, train_step
from jetlib.study import training_dir
from tests.conftest import ingest_small

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return ingest_small(tmp_path_factory.mktemp("red"))


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def _pretrain_run(folder: Path, ds: str, *, config: dict | None = None, blob: dict | None = None,
                  widths=None) -> Path:
    """A pretraining's output as jetlib.pretrain writes it (encoder.pt, then run.json), fields overridden."""
    d = open_dataset(ds)
    cfg = VARIANTS["tiny"].to_dict() | {"in_channels": d.image_shape[0]}
    net = models.create("resnet", **cfg)
    encoder = {"arch": "resnet", "config": {**cfg, **({"widths": widths} if widths else {})},
               "state_dict": net.state_dict(), "normalize": "scale", "dataset": d.manifest["id"], **(blob or {})}
    store = open_store(str(folder))
    record = save_object(store, "encoder.pt", encoder)
    records.write_run(store, records.PRETRAIN, {"dataset": {"uri": d.uri, "id": d.manifest["id"]}, "encoder": record,
                                                "config": {"seed": 0, "method": "simclr", **(config or {})}})
    return folder


def _model_run(folder: Path, ds: str, *, blob: dict | None = None, run: dict | None = None, widths=None) -> Path:
    """A training's output as jetlib.trainer.write_outputs writes it (model.pt, then run.json), fields overridden."""
    d = open_dataset(ds)
    cfg = VARIANTS["tiny"].to_dict() | {"in_channels": d.image_shape[0]}
    net = models.create("resnet", **cfg).reset_head("cls", hidden=8)
    body = {"arch": "resnet", "config": {**cfg, **({"widths": widths} if widths else {})}, "task": "cls",
            "head": net.head_config, "mode": "scratch", "label_fraction": 1.0, "seed": 0, "normalize": "scale",
            "dataset": d.manifest["id"], "state_dict": net.state_dict(), **(blob or {})}
    store = open_store(str(folder))
    record = save_object(store, "model.pt", {k: v for k, v in body.items() if v is not _DROP})
    training = {"best_epoch": 0, "best_value": 0.5, "epochs_run": 1, "stopped_early": False, "train_seconds": 1.0,
                "train_jets_per_s": 10.0}
    fields = {"model": record, "arch": "resnet", "task": "cls", "mode": "scratch", "label_fraction": 1.0, "seed": 0,
              "dataset": {"uri": d.uri, "id": d.manifest["id"]}, "training": training,
              "resources": {"device": "cpu"}, "config": {"amp": "off"}, **(run or {})}
    records.write_run(store, records.MODEL, {k: v for k, v in fields.items() if v is not _DROP})
    return folder


_DROP = object()  # a key left out of the record


def _cli(argv, capsys) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


# --- a record chose a path ------------------------------------------------------------------------

@pytest.mark.parametrize("config,line", [
    ({"method": "../../../../escaped"}, "config.method: must be a name of lowercase letters"),
    ({"seed": "abc"}, "config.seed: must be a valid integer"),
    ({"seed": -4}, "config.seed: must be greater than or equal to 0"),
])
def test_a_pretraining_record_never_names_the_training_folder(config, line, ds, tmp_path, capsys):
    """Its encoder.pt untouched (the checksum still matches), only run.json's method or seed tampered."""
    enc = _pretrain_run(tmp_path / "run" / "pretrain-simclr-s0", ds, config=config)
    before = _files(tmp_path)
    with pytest.raises(DataError, match=line):
        train_step(ds, str(tmp_path / "run"), problem="cls", mode="finetune", fraction=1.0, seed=0, preset="tiny",
                   encoder=str(enc))
    with pytest.raises(SystemExit) as e, step_errors():  # as the train component runs it
        train_step(ds, str(tmp_path / "run"), problem="cls", mode="linear", fraction=1.0, seed=0, preset="tiny",
                   encoder=str(enc))
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert _files(tmp_path) == before  # no claim, no checkpoint, no folder, inside the run or outside it
    assert not (tmp_path.parent / "escaped").exists()
    with pytest.raises(ConfigError, match="training folder method: must be a name"):
        training_dir(str(tmp_path / "run"), "cls", "finetune", 1.0, 0, 0, "../../x")


# --- records read back with missing or mistyped keys ----------------------------------------------

@pytest.mark.parametrize("blob,run,line", [
    ({"normalize": _DROP}, {}, "model.pt normalize: is missing"),
    ({"seed": "abc"}, {}, "model.pt seed: must be a valid integer"),
    ({"dataset": 7}, {}, "model.pt dataset: must be a valid string"),
    ({"config": "resnet"}, {}, "model.pt config: must be a valid dictionary"),
    ({}, {"training": _DROP}, "run.json training: is missing"),
    ({}, {"resources": "lots"}, "run.json resources: must be a valid dictionary"),
    ({}, {"training": {"best_epoch": "0"}}, "run.json training.best_epoch: must be a valid integer"),
    ({}, {"dataset": {"uri": "x"}}, "run.json dataset.id: is missing"),
])
def test_evaluate_refuses_a_malformed_model_record_in_one_line(blob, run, line, ds, tmp_path, capsys):
    model = _model_run(tmp_path / "model", ds, blob=blob, run=run)
    code, err = _cli(["evaluate", "--data", ds, "--model", model, "--out", tmp_path / "results"], capsys)
    assert code == 2 and err.count("\n") == 1 and line in err, err
    assert not (tmp_path / "results").exists()


def test_evaluate_scores_the_untampered_record(ds, tmp_path, capsys):
    """The reference: the same writers, nothing tampered: evaluate scores it (the refusals are the tampering's)."""
    model = _model_run(tmp_path / "model", ds)
    code, err = _cli(["evaluate", "--data", ds, "--model", model, "--out", tmp_path / "results"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "results" / "cls-scratch-f1-s0.json").read_text())
    assert check_record(Result, result, "result") is result  # what evaluate writes passes what readers check


@pytest.mark.parametrize("blob,config,line", [
    ({"dataset": _DROP}, {}, "encoder.pt dataset: is missing"),
    ({"normalize": 1}, {}, "encoder.pt normalize: must be a valid string"),
    ({"state_dict": {"stem.0.weight": [0.0]}}, {}, "encoder.pt state_dict: must map parameter names to tensors"),
    ({}, {"seed": 1.5}, "run.json config.seed: must be a valid integer"),
])
def test_finetune_refuses_a_malformed_encoder_record_in_one_line(blob, config, line, ds, tmp_path, capsys):
    enc = _pretrain_run(tmp_path / "enc", ds, blob={k: v for k, v in blob.items() if v is not _DROP}, config=config)
    if blob.get("dataset") is _DROP:  # written without the key
        data = torch.load(enc / "encoder.pt", weights_only=True)
        del data["dataset"]
        store = open_store(str(enc))
        rec = save_object(store, "encoder.pt", data)
        run = json.loads((enc / "run.json").read_text())
        (enc / "run.json").write_text(json.dumps({**run, "encoder": rec}))
    code, err = _cli(["finetune", "--data", ds, "--out", tmp_path / "ft", "--task", "cls", "--mode", "finetune",
                      "--init", enc, "--preset", "tiny"], capsys)
    assert code == 2 and err.count("\n") == 1 and line in err, err
    assert not (tmp_path / "ft").exists()


# --- memory bombs ---------------------------------------------------------------------------------

def test_a_small_model_file_recording_huge_widths_is_refused_before_allocating(ds, tmp_path, capsys):
    """widths 1,536 (2 GB to build) and 100,000 (far more than the schema allows) in a model.pt of tiny weights."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    model = _model_run(tmp_path / "model", ds, widths=[1536] * 7)
    assert (model / "model.pt").stat().st_size < 100_000
    code, err = _cli(["evaluate", "--data", ds, "--model", model, "--out", tmp_path / "r"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert re.search(r"model.pt: its config implies \S+ of shape \([^)]*1536[^)]*\) but its weights hold \(", err), err
    assert err.endswith("refused before building the network\n")
    enc = _pretrain_run(tmp_path / "enc", ds, widths=[100_000] * 7)
    code, err = _cli(["finetune", "--data", ds, "--out", tmp_path / "ft", "--task", "cls", "--mode", "finetune",
                      "--init", enc, "--preset", "tiny"], capsys)
    assert code == 2 and err.count("\n") == 1 and "model.widths[0]: must be less than or equal to 8192" in err, err
    assert not (tmp_path / "ft").exists() and not (tmp_path / "r").exists()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown < 500_000  # KiB: nothing near the 2 GB the recorded widths would take


def test_a_config_whose_shapes_differ_from_its_weights_is_refused_by_name():
    net = models.create("resnet", **VARIANTS["tiny"].to_dict())
    blob = {"arch": "resnet", "config": {**VARIANTS["tiny"].to_dict(), "stem_width": 5}, "state_dict": net.state_dict()}
    with pytest.raises(DataError, match=r"stem.0.weight of shape \(5, 3, 3, 3\) but its weights hold \(4, 3, 3, 3\)"):
        models.from_blob(blob, "model.pt")
    blob = {"arch": "resnet", "config": VARIANTS["tiny"].to_dict(), "state_dict": net.state_dict()}
    back = models.from_blob(blob, "model.pt").eval()  # the reference: shapes match, weights loaded
    assert all(torch.equal(back.state_dict()[k], v) for k, v in net.state_dict().items())


@pytest.mark.slow  # a CLI subprocess filling 6 GB of address space: ~5 s of CPU, ~15 s wall
def test_a_model_the_address_space_cannot_hold_ends_pretrain_with_exit_5(ds, tmp_path):
    """Within every bound (widths 8,192), but 2.4 GB per convolution in a process limited to 6 GB of
    address space: one line, exit 5, no traceback, no claim."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "jetlib", "pretrain", "--data", ds, "--out", str(out), "--preset", "tiny",
                        "--device", "cpu", "--set", "model.widths=8192,8192,8192,8192,8192,8192,8192"],
                       capture_output=True, text=True, preexec_fn=limit, cwd=ROOT, timeout=300,
                       env={**os.environ, "JETLIB_PROGRESS": "0"})
    assert r.returncode == 5 and r.stderr.count("\n") == 1 and "out of memory (" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (out / ".jetlib-claim.json").exists()


def test_a_python_memory_error_in_pretrain_is_a_resource_error(ds, tmp_path, monkeypatch):
    from jetlib import pretrain as pt

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(pt, "_pretrain", no_memory)
    with pytest.raises(ResourceError, match=r"^out of memory \(\): use a smaller model") as e:
        pt.pretrain(ds, str(tmp_path / "out"), pt.make_config("tiny"), device="cpu")
    assert e.value.exit_code == 5


# --- values no run should accept --------------------------------------------------------------------

@pytest.mark.parametrize("argv,line", [
    (["--lr", "1e308"], "lr: must be less than or equal to 10, got 1e+308"),
    (["--set", "weight_decay=nan"], "weight_decay: must be a finite number"),
    (["--seed", "99999999999"], "seed: must be less than or equal to 2147483647"),
    (["--set", "model.groups=0"], "model.groups: must be greater than or equal to 1"),
    (["--set", "method_params.temperature=inf"], "temperature: must be a finite number"),
    (["--set", "epochs.x=1"], "epochs.x: epochs has no fields of its own"),
])
def test_pretrain_refuses_what_no_run_should_accept_and_leaves_no_claim(argv, line, ds, tmp_path, capsys):
    code, err = _cli(["pretrain", "--data", ds, "--out", tmp_path / "out", "--preset", "tiny", *argv], capsys)
    assert code == 2 and err.count("\n") == 1 and line in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,line", [
    (["--set", "grad_clip=-1"], "grad_clip: must be greater than 0"),
    (["--set", "head_hidden=0"], "head_hidden: must be greater than or equal to 1"),
    (["--set", "head_dropout=1.5"], "head_dropout: must be less than 1"),
    (["--set", "plateau_factor=2"], "plateau_factor: must be less than 1"),
    (["--set", "restart_t0=0"], "restart_t0: must be greater than or equal to 1"),
    (["--set", "model.strides=1,0,2,1,2,1,2"], "model.strides[1]: must be greater than or equal to 1"),
])
def test_finetune_refuses_what_no_run_should_accept_and_leaves_no_claim(argv, line, ds, tmp_path, capsys):
    code, err = _cli(["finetune", "--data", ds, "--out", tmp_path / "out", "--task", "reg", "--mode", "scratch",
                      "--preset", "tiny", *argv], capsys)
    assert code == 2 and err.count("\n") == 1 and line in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seeds,pretrain_seeds,line", [
    ([-1], [0], "seeds[0]: must be greater than or equal to 0"),
    ([2**31], [0], "seeds[0]: must be less than or equal to 2147483647"),
    ([0], ["x"], "pretrain_seeds[0]: must be a valid integer"),
    ([0], [2**40], "pretrain_seeds[0]: must be less than or equal to 2147483647"),
])
def test_the_plan_refuses_seeds_a_training_would_fail_on(seeds, pretrain_seeds, line):
    from jetlib.study import plan

    with pytest.raises(ConfigError) as e:
        plan([0.1], seeds, ["cls-finetune", "cls-scratch"], ["simclr"], pretrain_seeds)
    assert line in str(e.value)
    assert len(plan([0.1], [2**31 - 1], ["cls-finetune"], ["simclr"], [2**31 - 1])) == 1  # the largest is fine


# --- the environment ---------------------------------------------------------------------------------

@pytest.mark.parametrize("env,line", [
    ({"JETLIB_TMPDIR": "{tmp}/missing"}, "JETLIB_TMPDIR='{tmp}/missing' is not an existing directory"),
    ({"JETLIB_TMPDIR": "{tmp}/a-file"}, "JETLIB_TMPDIR='{tmp}/a-file' is not an existing directory"),
    ({"JETLIB_CACHE": "{tmp}/a-file"}, "JETLIB_CACHE='{tmp}/a-file' is a file, not a directory"),
    ({"JETLIB_CACHE": ""}, "JETLIB_CACHE is set but empty"),
    ({"JETLIB_STORE": ""}, "JETLIB_STORE is set but empty"),
    ({"RANK": "zero"}, "RANK: must be a valid integer"),
    ({"RANK": "3", "WORLD_SIZE": "2"}, "RANK 3 must be below WORLD_SIZE 2"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE: must be a valid integer"),
])
def test_a_malformed_environment_stops_every_step_before_it_writes(env, line, ds, tmp_path, monkeypatch, capsys):
    work = tmp_path / "cwd"
    work.mkdir()
    (tmp_path / "a-file").write_text("x")
    monkeypatch.chdir(work)
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(tmp=tmp_path))
    line = line.format(tmp=tmp_path)
    for argv in (["pretrain", "--data", ds, "--out", "out", "--preset", "tiny"],
                 ["ingest", str(Path(ds).parent.parent / "jets.h5")]):  # --store from JETLIB_STORE
        code, err = _cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and line in err, err
        assert list(work.iterdir()) == []  # no claim, no store folder, nothing in the working directory
    with pytest.raises(SystemExit) as e, step_errors():  # a KFP component checks it before its step, too
        raise AssertionError("not reached")
    assert e.value.code == 2 and line in capsys.readouterr().err
