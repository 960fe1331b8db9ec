"""``jetlib tune`` on tiny data: a 2-trial search and its recipe, the median pruner, a killed tune continued."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from jetlib import pretrain as pt
from jetlib.errors import ConfigError
from jetlib.tune import study as ts
from jetlib.tune.recipe import read_recipe
from tests.conftest import run_cli
from tests.test_methods import dataset  # noqa: F401  (the module-scoped 24x24 labelled dataset)

ROOT = Path(__file__).resolve().parents[1]
FAST = {"epochs": "2", "max_steps_per_epoch": "2"}


def _study(out):
    storage = JournalStorage(JournalFileBackend(str(Path(out) / "study.journal")))
    return optuna.load_study(study_name="jetlib-vicreg", storage=storage)


@pytest.mark.slow  # two trial pretrainings and a re-run: ~11 s of CPU
def test_a_two_trial_tune_writes_the_best_trials_recipe(dataset, tmp_path):  # noqa: F811
    out = tmp_path / "tune"
    result = ts.tune(dataset, str(out), "vicreg", 2, preset="tiny", sets=FAST, device="cpu")
    study = _study(out)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    best = max(study.trials, key=lambda t: t.value)
    recipe = read_recipe(str(out / "recipe.json"))
    assert recipe["method"] == "vicreg" and recipe["objective"] == {"name": "knn_accuracy", "split": "val",
                                                                     "value": best.value}
    assert recipe["values"] == {"lr": best.params["lr"], "weight_decay": best.params["weight_decay"],
                                "method_params": {"sim_weight": best.params["sim_weight"],
                                                  "var_weight": best.params["var_weight"]}}
    assert result["knn_accuracy"] == best.value and result["trials"]["complete"] == 2
    # the objective is the trial's own validation k-NN accuracy, as its pretraining recorded it
    run = json.loads((Path(best.user_attrs["run"]) / "run.json").read_text())
    assert run["final"]["knn_accuracy"] == best.value and run["config"]["lr"] == best.params["lr"]
    assert sorted(best.intermediate_values) == [0, 1]
    # the round trip: pretrain --recipe runs the best trial's settings (the preset's length, the user's flags)
    cfg = pt.make_config("tiny", read_recipe(str(out / "recipe.json")), **FAST)
    assert (cfg.method, cfg.lr, cfg.weight_decay) == ("vicreg", best.params["lr"], best.params["weight_decay"])
    assert cfg.method_params["sim_weight"] == best.params["sim_weight"]
    assert asdict_config(cfg) == run["config"]  # exactly the config the best trial ran
    rows = ts.history(str(out))  # what a plot of the search reads
    assert [(r["number"], r["state"], r["value"]) for r in rows] == [(t.number, "complete", t.value)
                                                                     for t in study.trials]
    assert rows[best.number]["epochs"] == {0: best.intermediate_values[0], 1: best.intermediate_values[1]}
    # a finished search re-run adds nothing
    again = ts.tune(dataset, str(out), "vicreg", 2, preset="tiny", sets=FAST, device="cpu")
    assert len(_study(out).trials) == 2 and again["best_trial"] == best.number


def asdict_config(cfg):
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(cfg)))


def test_a_trial_below_the_median_is_pruned(dataset, tmp_path):  # noqa: F811
    """optuna.pruners.MedianPruner: after PRUNE_AFTER_TRIALS complete trials, a trial whose epoch-0 accuracy is
    below theirs stops there (accuracy 2.0 is beyond any real trial)."""
    out = tmp_path / "tune"
    out.mkdir()
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    study = optuna.create_study(study_name="jetlib-vicreg", storage=storage, direction="maximize")
    dims = ts.space("vicreg", pt.make_config("tiny", method="vicreg"))
    params = {k: d.low for k, d in dims.items()}
    for _ in range(ts.PRUNE_AFTER_TRIALS):
        study.add_trial(create_trial(params=params, distributions=dims, value=2.0,
                                     intermediate_values={0: 2.0, 1: 2.0}))
    ts.tune(dataset, str(out), "vicreg", ts.PRUNE_AFTER_TRIALS + 1, preset="tiny", sets=FAST, device="cpu")
    last = _study(out).trials[-1]
    assert last.state == TrialState.PRUNED and list(last.intermediate_values) == [0]


@pytest.mark.slow  # two tune processes and three trials: ~13 s of CPU
def test_a_killed_tune_continues_its_interrupted_trial(dataset, tmp_path):  # noqa: F811
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "jetlib", "tune", "--data", dataset, "--method", "vicreg", "--trials", "2",
           "--out", str(out), "--preset", "tiny", "--device", "cpu", "--set", "epochs=3",
           "--set", "max_steps_per_epoch=2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list((out / "trials").glob("*/checkpoints/*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the tune and its trial, as a pod's end takes both
    proc.wait()
    first = _study(out).trials
    assert [t.state for t in first] == [TrialState.RUNNING]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    trials = _study(out).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert _study(out).user_attrs["interrupted"] == [0]
    assert trials[1].params == first[0].params and trials[1].user_attrs["run"] == first[0].user_attrs["run"]
    log = (Path(first[0].user_attrs["run"]).parent / (Path(first[0].user_attrs["run"]).name + ".log")).read_text()
    assert "resum" in log.lower()  # the same pretraining, continued from its checkpoint
    assert json.loads(r.stdout)["trials"] == {"complete": 2, "pruned": 0, "fail": 1}


def test_tune_refuses_bad_input_in_one_line(dataset, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="local folder"):
        ts.tune(dataset, "s3://bucket/tune", "vicreg", 2, preset="tiny")
    r = run_cli("tune", "--data", dataset, "--method", "nope", "--trials", "2", "--out", str(tmp_path / "t"))
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("tune", "--data", str(tmp_path / "missing"), "--method", "byol", "--trials", "1",
                "--out", str(tmp_path / "t"), "--preset", "tiny")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
