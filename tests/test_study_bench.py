"""benchmarks/study.py --tune-trials: each (method, pretraining seed) searched from its own recipe, then
pretrained with the recipe found; the search's best trial is that pretraining when it ran the study's epochs."""

import importlib.util
import json
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from jetlib import methods
from jetlib import pretrain as pt
from jetlib.losses.barlowtwins import default_lambda
from jetlib.tune import study as ts
from tests.test_methods import dataset  # noqa: F401  (the module-scoped 24x24 labelled dataset)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("study_bench_tune", ROOT / "benchmarks" / "study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _study(out, method):
    storage = JournalStorage(JournalFileBackend(str(Path(out) / "study.journal")))
    return optuna.load_study(study_name=f"jetlib-{method}", storage=storage)


@pytest.mark.parametrize("method", ["barlowtwins", "byol", "simclr", "vicreg"])
def test_the_search_starts_from_the_methods_own_recipe(bench, tmp_path, method):
    """Trial 0 is the recipe (the centre of every searched range); queued once, whatever the re-runs."""
    sets = {"epochs": 1, "seed": 1, "augment": "seed"}
    bench.start_from_recipe(tmp_path, method, "cpu", sets)
    bench.start_from_recipe(tmp_path, method, "cpu", sets)  # a re-run: the journal exists, nothing added
    cfg = pt.make_config("cpu", method=method, **sets)
    dims = ts.space(method, cfg)
    study = _study(tmp_path, method)
    assert [t.state for t in study.trials] == [TrialState.WAITING]
    first = study.ask(dims)  # what jetlib.tune.study.tune asks next
    assert first.params["lr"] == pytest.approx(cfg.lr) and first.params["weight_decay"] == pytest.approx(
        cfg.weight_decay)
    expected = {"barlowtwins": {"lambd": default_lambda(methods.params(method, cfg.method_params).proj_dim)},
                "byol": {"base_momentum": 0.99}, "simclr": {"temperature": 0.07},
                "vicreg": {"sim_weight": 25.0, "var_weight": 25.0}}[method]
    assert {k: v for k, v in first.params.items() if k not in ("lr", "weight_decay")} == pytest.approx(expected)
    for name, dist in dims.items():  # inside the space, so Optuna records it as sampled there
        assert dist.low <= first.params[name] <= dist.high


@pytest.mark.slow  # a two-trial search, run twice: ~13 s of CPU
def test_a_tuned_pretraining_is_the_best_trial_of_its_own_search(bench, dataset, tmp_path):  # noqa: F811
    runs = tmp_path / "runs"
    out, final, used, search = bench.pretraining(dataset, runs, "vicreg", 1, "tiny", "seed", 1, trials=2)
    study = _study(tmp_path / "tune" / "vicreg-s1", "vicreg")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.trials[0].params == pytest.approx({"lr": 0.3, "weight_decay": 1e-4, "sim_weight": 25.0,
                                                    "var_weight": 25.0})
    best = max(study.trials, key=lambda t: t.value)
    assert search == {"knn_accuracy": best.value, "best_trial": best.number, "trials": {
        "complete": 2, "pruned": 0, "fail": 0}}
    assert search["knn_accuracy"] >= study.trials[0].value  # never below the untuned recipe on the objective
    # the study's pretraining is the best trial's run: its seed, augmentations, epochs and the recipe found
    assert out == best.user_attrs["run"] and final == json.loads((Path(out) / "run.json").read_text())["final"]
    ran = json.loads((Path(out) / "run.json").read_text())["config"]
    assert (ran["seed"], ran["augment"], ran["epochs"], ran["lr"]) == (1, "seed", 1, best.params["lr"])
    assert used["lr"] == best.params["lr"] and used["optimizer"] == "lars" and used["lr_batch"] == 256
    assert used["method_params"]["var_weight"] == best.params["var_weight"]
    # re-running resumes: the finished search adds no trial and the same run is returned
    again = bench.pretraining(dataset, runs, "vicreg", 1, "tiny", "seed", 1, trials=2)
    assert again[0] == out and len(_study(tmp_path / "tune" / "vicreg-s1", "vicreg").trials) == 2
    # untuned, the method's own recipe runs in a folder of its own
    assert bench.suffix(0, 1) == "" and bench.suffix(2, 1) == "-tuned2x1"
