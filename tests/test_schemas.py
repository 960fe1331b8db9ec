"""jetlib.schemas: for every schema a table of bad values (each one line, the right exit code, nothing
written), and a Hypothesis sweep over every config dataclass: any value for any field gives a valid
config or one clean ConfigError line, never another exception."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jetlib import baseline, cli, finetune, methods, pretrain, schemas
from jetlib.config import override
from jetlib.errors import ConfigError, DataError
from jetlib.models.resnet import VARIANTS, ResNetConfig
from jetlib.models.vgg import VGGConfig
from jetlib.schemas.env import check_environment, dist_env
from jetlib.schemas.records import EncoderBlob, Metrics, ModelBlob, ModelRun, PretrainRun, Result, check_record
from jetlib.trainer import Stopping

# --- configs: flags, --set, presets, method parameters ----------------------------------------

CONFIG_CASES = [
    (pretrain, {"lr": "inf"}, "lr: must be a finite number, got 'inf'"),
    (pretrain, {"lr": 1e308}, "lr: must be less than or equal to 10, got 1e+308"),
    (pretrain, {"lr": "0"}, "lr: must be greater than 0"),
    (pretrain, {"weight_decay": "nan"}, "weight_decay: must be a finite number, got 'nan'"),
    (pretrain, {"seed": -1}, "seed: must be greater than or equal to 0, got -1"),
    (pretrain, {"seed": str(2**31)}, "seed: must be less than or equal to 2147483647"),
    (pretrain, {"seed": "abc"}, "seed: must be a valid integer"),
    (pretrain, {"seed": True}, "seed: a number is needed, not a boolean, got True"),
    (pretrain, {"seed.x": "1"}, "seed.x: seed has no fields of its own; set it as seed=VALUE"),
    (pretrain, {"epochs": "2.5"}, "epochs: must be a valid integer"),
    (pretrain, {"batch_size": 1}, "batch_size must be at least 2"),
    (pretrain, {"method_params.temperature": "inf"}, "method_params of simclr: temperature: must be a finite number"),
    (pretrain, {"temperature": "-0.1"}, "method_params of simclr: temperature: must be greater than 0"),
    (pretrain, {"model.groups": "0"}, "model.groups: must be greater than or equal to 1, got '0'"),
    (pretrain, {"model.strides": "0,1,1,1,1,1,1"}, "model.strides[0]: must be greater than or equal to 1"),
    (pretrain, {"model.widths": "8"}, "model: widths and strides need one entry per block, got 1 widths and 7"),
    (pretrain, {"model.widths": ",".join(["8"] * 65)}, "model.widths: Tuple should have at most 64 items"),
    (pretrain, {"model.dropout": "1"}, "model.dropout: must be less than 1"),
    (pretrain, {"amp": "fp8"}, "amp: must be 'auto', 'bf16' or 'off', got 'fp8'"),
    (pretrain, {"augment": "wild"}, "augment: must be one of seed, physics, none (augmentation presets)"),
    (pretrain, {"loader": "disk"}, "loader: must be one of auto, resident, stream"),
    (pretrain, {"method": "../../escaped"}, "unknown pretraining method '../../escaped'"),
    (finetune, {"grad_clip": "-1"}, "grad_clip: must be greater than 0, got '-1'"),
    (finetune, {"head_hidden": "0"}, "head_hidden: must be greater than or equal to 1, got '0'"),
    (finetune, {"head_dropout": "1.5"}, "head_dropout: must be less than 1, got '1.5'"),
    (finetune, {"plateau_factor": "2"}, "plateau_factor: must be less than 1, got '2'"),
    (finetune, {"restart_t0": "0"}, "restart_t0: must be greater than or equal to 1, got '0'"),
    (finetune, {"lr": "nan"}, "lr: must be a finite number, got 'nan'"),
    (finetune, {"label_fraction": "0"}, "label_fraction: must be greater than 0"),
    (finetune, {"task": "../x"}, "task: must be one of cls, reg"),
    (finetune, {"mode": "vgg"}, "mode: must be one of finetune, linear, scratch"),
    (finetune, {"model.stem_width": "100000"}, "model.stem_width: must be less than or equal to 8192"),
    (baseline, {"model.heads": "0"}, "model.heads: must be greater than or equal to 1, got '0'"),
    (baseline, {"model.depths": "0,1,1,1"}, "model.depths[0]: must be greater than or equal to 1"),
    (baseline, {"model.widths": "8,8"}, "model: widths and depths need one entry per stage"),
    (baseline, {"mixup_alpha": "-1"}, "mixup_alpha: must be greater than or equal to 0"),
    (baseline, {"max_lr": "inf"}, "max_lr: must be a finite number"),
    (baseline, {"patience": "0"}, "patience: must be greater than or equal to 1"),
]


@pytest.mark.parametrize("step,values,line", CONFIG_CASES, ids=lambda v: str(v)[:40] if isinstance(v, dict) else "")
def test_a_bad_config_value_is_one_config_error_line(step, values, line):
    with pytest.raises(ConfigError) as e:
        step.make_config("tiny", **values)
    assert line in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("method,values,line", [
    ("simclr", {"proj_dim": "0"}, "proj_dim: must be greater than or equal to 1"),
    ("simclr", {"temperature": "1000"}, "temperature: must be less than or equal to 100"),
    ("vicreg", {"sim_weight": "-1"}, "sim_weight: must be greater than or equal to 0"),
    ("vicreg", {"cov_weight": "inf"}, "cov_weight: must be a finite number"),
    ("barlowtwins", {"lambd": "nan"}, "lambd: must be a finite number"),
    ("byol", {"base_momentum": "1.5"}, "base_momentum: must be less than or equal to 1"),
    ("byol", {"pred_hidden": "-1"}, "pred_hidden: must be greater than or equal to 0"),
])
def test_a_bad_method_parameter_names_the_method_and_the_field(method, values, line):
    with pytest.raises(ConfigError, match=f"^method_params of {method}: ") as e:
        methods.params(method, values)
    assert line in str(e.value)


@pytest.mark.parametrize("argv,line", [
    (["pretrain", "--lr", "1e308"], "lr: must be less than or equal to 10, got 1e+308"),
    (["pretrain", "--seed", "-3"], "seed: must be greater than or equal to 0, got -3"),
    (["pretrain", "--set", "method_params.temperature=inf"], "temperature: must be a finite number"),
    (["pretrain", "--set", "lr.x=1"], "lr.x: lr has no fields of its own"),
    (["finetune", "--task", "cls", "--mode", "scratch", "--set", "grad_clip=-1"], "grad_clip: must be greater than 0"),
    (["finetune", "--task", "reg", "--mode", "scratch", "--set", "head_dropout=1.5"], "head_dropout: must be less"),
    (["baseline", "--set", "model.heads=0"], "model.heads: must be greater than or equal to 1"),
])
def test_a_bad_flag_or_set_exits_2_in_one_line_and_writes_nothing(argv, line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main([*argv, "--data", "DS", "--out", "out", "--preset", "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and line in err, err
    assert list(tmp_path.iterdir()) == []  # no claim, no folder, nothing in the working directory


# --- the sweep: any value for any field ---------------------------------------------------------

VALUES = st.one_of(
    st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(max_size=12), st.integers(-10, 10**6).map(str), st.floats().map(repr),
    st.lists(st.integers(-3, 10**5), max_size=70).map(tuple), st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(-3, 3), max_size=2),
    st.lists(st.integers(-2, 40), max_size=9).map(lambda v: ",".join(map(str, v))),  # a --set list
)
SWEPT = [pretrain.PretrainConfig(), finetune.FinetuneConfig(), baseline.BaselineConfig(), ResNetConfig(),
         VGGConfig(), Stopping("val_loss", False, 3),
         *(methods.get(m).Params() for m in ("simclr", "vicreg", "barlowtwins", "byol"))]


def _finite(cfg) -> bool:
    """Every number in a config (nested ones and tuples included) is finite and no bool stands for one."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v) and not _finite(v):
            return False
        for x in v if isinstance(v, tuple) else (v,):
            if isinstance(x, float) and not math.isfinite(x):
                return False
    return True


@pytest.mark.parametrize("default", SWEPT, ids=lambda c: type(c).__name__)
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_for_any_field_is_a_valid_config_or_one_clean_line(default, data):
    names = [f.name for f in dataclasses.fields(default)]
    nested = [f"{n}.{g.name}" for n in names if dataclasses.is_dataclass(getattr(default, n))
              for g in dataclasses.fields(getattr(default, n))]
    values = data.draw(st.dictionaries(st.sampled_from(names + nested), VALUES, min_size=1, max_size=3))
    try:
        cfg = override(default, values)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert type(cfg) is type(default) and _finite(cfg)
    schemas.check(dataclasses.replace(cfg))  # what was accepted passes its schema again, unchanged
    assert cfg == dataclasses.replace(cfg)


@settings(max_examples=80, deadline=None, database=None)  # nothing written into the checkout
@given(seed=st.one_of(st.integers(-2**40, 2**40), st.text(max_size=6), st.floats()))
def test_the_plan_accepts_a_seed_exactly_when_every_training_does(seed):
    from jetlib.study import plan

    def accepted(call) -> bool:
        try:
            call()
        except ConfigError:
            return False
        return True

    planned = accepted(lambda: plan([0.1], [seed], ["cls-finetune"], ["simclr"], [seed]))
    trained = all(accepted(lambda s=s: s.make_config("tiny", seed=seed)) for s in (pretrain, finetune, baseline))
    assert planned == trained


# --- records read back ----------------------------------------------------------------------------

def _state() -> dict:
    return {"stem.0.weight": torch.zeros(4, 3, 3, 3)}


GOOD = {
    PretrainRun: {"format": "jetlib.pretrain/2", "encoder": {"key": "encoder.pt", "sha256": "a" * 64},
                  "config": {"seed": 0, "method": "simclr"}, "dataset": {"uri": "s/d", "id": "0123456789ab"}},
    ModelRun: {"format": "jetlib.model/2", "model": {"key": "model.pt", "sha256": "b" * 64}, "arch": "resnet",
               "task": "cls", "mode": "scratch", "label_fraction": 0.1, "seed": 2,
               "dataset": {"uri": "s/d", "id": "0123456789ab"}, "resources": {"device": "cpu"}, "config": {},
               "training": {"best_epoch": 0, "best_value": None, "epochs_run": 1, "stopped_early": False,
                            "train_seconds": 1.0, "train_jets_per_s": 10.0}},
    EncoderBlob: {"arch": "resnet", "config": {}, "state_dict": _state(), "normalize": "scale", "dataset": "ab12"},
    Result: {"format": "jetlib.result/2", "task": "cls", "mode": "finetune", "label_fraction": 0.5, "seed": 1,
             "model": {"uri": "runs/x/cls", "sha256": "c" * 64, "arch": "resnet"},
             "dataset": {"uri": "s/d", "id": "0123456789ab", "split": "test", "jets": 10},
             "scalars": {"auc": 0.7, "mae": None}, "resources": {}, "config": {}, "origin": None,
             "training": {"best_epoch": 2, "best_value": 0.6, "epochs_run": 3, "stopped_early": True,
                          "train_seconds": 2.0, "train_jets_per_s": 5.0}},
    Metrics: {"config": {}, "dataset": {"uri": "s/d", "id": "0123456789ab"}, "epochs": [{"epoch": 0, "loss": 1.0}],
              "training": {"best_epoch": 0, "best_value": None, "epochs_run": 1, "stopped_early": False,
                           "train_seconds": None, "train_jets_per_s": None}},
    ModelBlob: {"arch": "resnet", "config": {}, "state_dict": _state(), "task": "reg", "head": {}, "mode": "scratch",
                "label_fraction": 1.0, "seed": 0, "normalize": "none", "dataset": "ab12",
                "target": {"mean": 1.0, "std": 2.0}},
}


def _with(record: dict, path: str, value):
    out = {**record}
    head, _, rest = path.partition(".")
    if rest:
        out[head] = _with(record[head], rest, value)
    elif value is _with:
        del out[head]
    else:
        out[head] = value
    return out


@pytest.mark.parametrize("schema,path,value,line", [
    (PretrainRun, "config.method", "../../../../escaped", "config.method: must be a name of lowercase letters"),
    (PretrainRun, "config.seed", "abc", "config.seed: must be a valid integer, got 'abc'"),
    (PretrainRun, "config.seed", 3.0, "config.seed: must be a valid integer"),
    (PretrainRun, "config.seed", -1, "config.seed: must be greater than or equal to 0"),
    (PretrainRun, "encoder.sha256", "x", "encoder.sha256: String should match pattern"),
    (PretrainRun, "encoder.key", "../run.json", "encoder.key: String should match pattern"),
    (PretrainRun, "config", _with, "config: is missing"),
    (ModelRun, "training", _with, "training: is missing"),
    (ModelRun, "training", "fast", "training: must be a valid dictionary"),
    (ModelRun, "resources", [1], "resources: must be a valid dictionary"),
    (ModelRun, "label_fraction", 2.0, "label_fraction: must be less than or equal to 1"),
    (ModelRun, "mode", "../x", "mode: must be a name"),
    (ModelRun, "training.train_seconds", "1", "training.train_seconds: must be a valid number"),
    (EncoderBlob, "normalize", "log", "normalize: must be one of scale, none"),
    (EncoderBlob, "dataset", _with, "dataset: is missing"),
    (EncoderBlob, "config", "widths", "config: must be a valid dictionary"),
    (EncoderBlob, "state_dict", {"w": [1.0]}, "state_dict: must map parameter names to tensors"),
    (ModelBlob, "seed", "abc", "seed: must be a valid integer"),
    (ModelBlob, "task", "../x", "task: must be a name"),
    (ModelBlob, "origin", {"encoder_sha256": "zz"}, "origin.encoder_sha256: String should match pattern"),
    (Result, "seed", "3", "seed: must be a valid integer"),
    (Result, "mode", "../../x", "mode: must be a name"),
    (Result, "scalars", {"auc": "high"}, "scalars.auc: must be a valid number"),
    (Result, "model.sha256", _with, "model.sha256: is missing"),
    (Metrics, "epochs", [{"loss": 1.0}], "epochs[0].epoch: is missing"),
    (Metrics, "epochs", "all", "epochs: must be a valid list"),
])
def test_a_malformed_record_is_one_data_error_line(schema, path, value, line):
    assert check_record(schema, GOOD[schema], "f") is GOOD[schema]  # the reference passes as it is
    with pytest.raises(DataError) as e:
        check_record(schema, _with(GOOD[schema], path, value), "runs/x/run.json")
    assert e.value.exit_code == 2 and str(e.value).startswith("runs/x/run.json ") and line in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_a_record_keeps_keys_its_schema_does_not_name():
    newer = {**GOOD[PretrainRun], "final": {"loss": None}, "from_a_newer_jetlib": 1}
    assert check_record(PretrainRun, newer, "f") is newer


# --- the environment ----------------------------------------------------------------------------

@pytest.mark.parametrize("env,line", [
    ({"JETLIB_TMPDIR": "MISSING"}, "JETLIB_TMPDIR='MISSING' is not an existing directory"),
    ({"JETLIB_TMPDIR": "FILE"}, "JETLIB_TMPDIR='FILE' is not an existing directory"),
    ({"JETLIB_CACHE": "FILE"}, "JETLIB_CACHE='FILE' is a file, not a directory"),
    ({"JETLIB_CACHE": ""}, "JETLIB_CACHE is set but empty"),
    ({"JETLIB_STORE": ""}, "JETLIB_STORE is set but empty"),
    ({"JETLIB_STORE": "  "}, "JETLIB_STORE is set but empty"),
    ({"JETLIB_PROGRESS": "yes"}, "JETLIB_PROGRESS: must be '0' or '1'"),
    ({"JETLIB_DIST_TIMEOUT_S": "-5"}, "JETLIB_DIST_TIMEOUT_S: must be greater than 0"),
    ({"RANK": "one"}, "RANK: must be a valid integer"),
    ({"RANK": "-1"}, "RANK: must be greater than or equal to 0"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE: must be greater than or equal to 1"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK 2 must be below WORLD_SIZE 2"),
    ({"RANK": "1"}, "RANK 1 must be below WORLD_SIZE 1"),
    ({"LOCAL_RANK": "4", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}, "LOCAL_RANK 4 must be below LOCAL_WORLD_SIZE 4"),
    ({"LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "2"}, "LOCAL_WORLD_SIZE 4 must be at most WORLD_SIZE 2"),
])
def test_a_malformed_environment_is_one_line(env, line, tmp_path):
    (tmp_path / "FILE").write_text("x")
    env = {k: str(tmp_path / v) if v in ("MISSING", "FILE") else v for k, v in env.items()}
    line = line.replace("'MISSING'", repr(str(tmp_path / "MISSING"))).replace("'FILE'", repr(str(tmp_path / "FILE")))
    with pytest.raises(ConfigError) as e:
        check_environment(env)
    assert str(e.value).startswith("environment variable") and line in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]  # nothing created to find out


def test_a_good_environment_is_read_as_torchrun_sets_it(tmp_path):
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "JETLIB_TMPDIR": str(tmp_path),
           "JETLIB_CACHE": str(tmp_path / "not-yet"), "JETLIB_STORE": "s3://b/p", "JETLIB_DIST_TIMEOUT_S": "60"}
    checked = check_environment(env)
    tmpdir, timeout = checked.JETLIB_TMPDIR, checked.JETLIB_DIST_TIMEOUT_S
    assert (tmpdir, timeout) == (str(tmp_path), 60.0)
    assert dist_env(env).model_dump() == {"RANK": 3, "WORLD_SIZE": 4, "LOCAL_RANK": 1, "LOCAL_WORLD_SIZE": 2}
    assert dist_env({}).model_dump() == {"RANK": 0, "WORLD_SIZE": 1, "LOCAL_RANK": 0, "LOCAL_WORLD_SIZE": None}


def test_the_presets_pass_their_own_schemas():
    for step in (pretrain, finetune, baseline):
        for preset in step.PRESETS:
            assert step.make_config(preset).preset == preset
    for variant in VARIANTS.values():
        assert ResNetConfig.from_dict(variant.to_dict()) == variant  # JSON's lists come back as the tuples
