"""Each KFP component's function called directly on tiny data, and the logic behind them (jetlib.workflow).

The chain ingest -> pretrain -> finetune / baseline -> evaluate -> report runs once per module
(tiny preset, 200 toy jets) and every test checks what one step handed on: store URIs in the
artifacts' metadata, files that exist and verify, metric values equal to the result file's.
"""

import json
import sys
import types
from pathlib import Path

import pytest
from kfp import dsl

from components.baseline import baseline
from components.evaluate import evaluate
from components.finetune import finetune
from components.ingest import ingest
from components.plan import plan, run_folder
from components.pretrain import pretrain
from components.report import report
from jetlib.data.store import open_store
from jetlib.errors import ConfigError, TrainingError
from jetlib.evaluate import CLS_KEYS, REG_KEYS
from jetlib.workflow import plan as expand
from jetlib.workflow import pretrain_step, read_run, result_metrics, roc_points, training_dir
from tests.conftest import write_toy_h5

COMMON = {"label_fraction", "seed", "test_jets", "trainable_parameters", "train_seconds"}


def artifact(kind, root: Path, name: str):
    return kind(name=name, uri=str(root / name))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Run every component's function once, in pipeline order; returns the artifacts by name."""
    root = tmp_path_factory.mktemp("components")
    write_toy_h5(root / "toy.h5", n=200)
    store, art = str(root / "store"), {}
    art["dataset"] = artifact(dsl.Dataset, root, "dataset")
    ingest.python_func(store=store, dataset=art["dataset"], source=str(root / "toy.h5"))
    run = run_folder.python_func(store=store, run_name="", job_name="job-1")
    art["encoder"] = artifact(dsl.Model, root, "encoder")
    pretrain.python_func(dataset=art["dataset"], run=run, encoder=art["encoder"], preset="tiny", seed=3)
    for name, problem, mode in (("cls", "cls", "finetune"), ("reg", "reg", "scratch")):
        art[name] = artifact(dsl.Model, root, name)
        finetune.python_func(dataset=art["dataset"], encoder=art["encoder"], run=run, problem=problem, mode=mode,
                             label_fraction=0.5, seed=1, model=art[name], preset="tiny")
    art["vgg"] = artifact(dsl.Model, root, "vgg")
    baseline.python_func(dataset=art["dataset"], run=run, label_fraction=0.5, seed=1, model=art["vgg"], preset="tiny")
    for name in ("cls", "reg", "vgg"):
        art[f"{name}_metrics"] = artifact(dsl.Metrics, root, f"{name}_metrics")
        art[f"{name}_curves"] = artifact(dsl.ClassificationMetrics, root, f"{name}_curves")
        evaluate.python_func(dataset=art["dataset"], model=art[name], run=run, metrics=art[f"{name}_metrics"],
                             curves=art[f"{name}_curves"])
    for name, kind in (("html", dsl.HTML), ("markdown", dsl.Markdown), ("summary", dsl.Metrics)):
        art[name] = artifact(kind, root, name)
    report.python_func(run=run, results=[art["cls_metrics"], art["reg_metrics"]], baseline_results=[art["vgg_metrics"]],
                       html=art["html"], markdown=art["markdown"], summary=art["summary"])
    return {"root": root, "store": store, "run": run, **art}


def test_run_folder_defaults_to_the_kfp_run_name(chain):
    assert chain["run"] == f"{chain['store']}/runs/job-1"
    assert run_folder.python_func(store="s3://b/p/", run_name="exp1", job_name="job-1") == "s3://b/p/runs/exp1"
    with pytest.raises(ConfigError, match="run_name"):
        run_folder.python_func(store="s3://b", run_name="a/b", job_name="x")


def test_ingest_hands_on_the_store_uri_not_the_data(chain):
    meta = chain["dataset"].metadata
    manifest = json.loads(open_store(meta["uri"]).get_bytes("manifest.json"))
    assert meta["id"] == manifest["id"] and meta["sha256"] == manifest["source"]["sha256"]
    assert meta["jets"] == 200 and sum(meta["splits"].values()) == 200 and meta["labelled"] is True
    # the artifact file is a small pointer holding the same as the metadata
    assert json.loads(Path(chain["dataset"].path).read_text()) == meta


def test_pretrain_points_at_a_finished_pretraining(chain):
    meta = chain["encoder"].metadata
    assert meta["uri"] == f"{chain['run']}/pretrain-s3"
    run = read_run(meta["uri"], "jetlib.pretrain/1")
    assert meta["sha256"] == run["encoder"]["sha256"] and meta["dataset_id"] == chain["dataset"].metadata["id"]
    assert meta["seed"] == 3 and meta["preset"] == "tiny" and meta["loss"] == run["final"]["loss"]


def test_trainings_land_in_the_agreed_folders(chain):
    run = chain["run"]
    assert chain["cls"].metadata["uri"] == f"{run}/cls-finetune-f0.5-s1-p3"  # the encoder's seed names the folder
    assert chain["reg"].metadata["uri"] == f"{run}/reg-scratch-f0.5-s1"  # scratch does not depend on it
    assert chain["vgg"].metadata["uri"] == f"{run}/cls-vgg-f0.5-s1"
    for name in ("cls", "reg", "vgg"):
        meta = chain[name].metadata
        assert meta["sha256"] == read_run(meta["uri"], "jetlib.model/1")["model"]["sha256"]
        assert (meta["label_fraction"], meta["seed"]) == (0.5, 1)
    cls_run = read_run(chain["cls"].metadata["uri"], "jetlib.model/1")
    assert cls_run["config"]["init"] == chain["encoder"].metadata["uri"]


def _result(chain, name: str) -> dict:
    results = open_store(f"{chain['run']}/results")
    for key in results.list():
        doc = json.loads(results.get_bytes(key))
        if doc.get("format") == "jetlib.result/1" and doc["model"]["uri"] == chain[name].metadata["uri"]:
            return doc
    raise AssertionError(f"no result for {name}")


@pytest.mark.parametrize("name,keys", [("cls", CLS_KEYS), ("reg", REG_KEYS), ("vgg", CLS_KEYS)])
def test_evaluate_logs_the_result_files_numbers(chain, name, keys):
    result = _result(chain, name)
    logged = chain[f"{name}_metrics"].metadata
    defined = {k for k in keys if result["scalars"][k] is not None}
    assert set(logged) == defined | COMMON
    for k in defined:
        assert logged[k] == pytest.approx(result["scalars"][k])
    assert logged["test_jets"] == result["dataset"]["jets"] == 40


def test_evaluate_logs_roc_and_confusion_for_classification_only(chain):
    result = _result(chain, "cls")
    curves = chain["cls_curves"].metadata
    roc = curves["confidenceMetrics"]
    assert 2 <= len(roc) <= 200
    assert [p["falsePositiveRate"] for p in roc] == pytest.approx(roc_points(result)[0])
    matrix = curves["confusionMatrix"]
    assert [r["row"] for r in matrix["rows"]] == result["classification"]["confusion_matrix"]
    assert sum(map(sum, (r["row"] for r in matrix["rows"]))) == 40
    assert chain["reg_curves"].metadata == {}


def test_report_outputs_the_stored_report(chain):
    out = f"{chain['run']}/report"
    assert chain["html"].metadata["uri"] == out and chain["html"].metadata["evaluations"] == 3
    assert Path(chain["html"].path).read_text() == (Path(out) / "report.html").read_text()
    assert Path(chain["markdown"].path).read_text() == (Path(out) / "report.md").read_text()
    summary = json.loads((Path(out) / "summary.json").read_text())
    assert chain["summary"].metadata == pytest.approx(summary) and "cls_auc_finetune_f0.5_mean" in summary


# --- the logic behind the components -----------------------------------------------------------

def test_plan_expands_the_grid_and_names_the_folder():
    items = plan.python_func(store="/s", run_name="r", job_name="j", label_fractions=[0.1, 0.01], seeds=[0.0, 1],
                             modes=["cls-scratch", "cls-vgg", "reg-finetune"], kind="resnet")
    assert len(items) == 2 * 2 * 2 and {i["folder"] for i in items} == {"/s/runs/r"}
    assert {(i["fraction"], i["seed"], i["problem"], i["mode"]) for i in items} == {
        (f, s, p, m) for f in (0.1, 0.01) for s in (0, 1) for p, m in (("cls", "scratch"), ("reg", "finetune"))}
    vgg = plan.python_func(store="/s", run_name="r", job_name="j", label_fractions=[0.1], seeds=[2], modes=["cls-vgg"],
                           kind="vgg")
    assert vgg == [{"fraction": 0.1, "seed": 2, "folder": "/s/runs/r"}]
    assert expand([0.1], [0], ["cls-finetune"])[1] == []  # no VGG asked for: an empty loop


@pytest.mark.parametrize("fractions,seeds,modes,match", [
    ([0.1], [0], ["cls-bogus"], "unknown 'cls-bogus'"),
    ([0.1], [0], [], "none given"),
    ([1.5], [0], ["cls-finetune"], r"\(0, 1\]"),
    (["a"], [0], ["cls-finetune"], "expected numbers"),
    ([0.1], [0.5], ["cls-finetune"], "whole numbers"),
    ([], [0], ["cls-finetune"], "at least one"),
])
def test_plan_refuses_bad_values(fractions, seeds, modes, match):
    with pytest.raises(ConfigError, match=match):
        expand(fractions, seeds, modes)


def test_training_dir_names_the_encoder_only_when_used():
    assert training_dir("R", "cls", "linear", 0.01, 2, 7) == "R/cls-linear-f0.01-s2-p7"
    assert training_dir("R", "reg", "scratch", 1.0, 0, 7) == "R/reg-scratch-f1-s0"


def test_result_metrics_skips_undefined_scores_but_keeps_the_rest():
    result = {"task": "cls", "label_fraction": 0.1, "seed": 2, "dataset": {"jets": 10},
              "scalars": {"accuracy": 0.5, "f1": 0.0, "roc_auc": None, "rejection_at_eps_s_0.5": None,
                          "rejection_at_eps_s_0.3": None, "mae": None},
              "resources": {"trainable_parameters": 5, "train_seconds": 1.5}}
    assert result_metrics(result) == {"accuracy": 0.5, "f1": 0.0, "label_fraction": 0.1, "seed": 2.0,
                                      "test_jets": 10.0, "trainable_parameters": 5.0, "train_seconds": 1.5}


def test_roc_points_thins_to_200_keeping_the_ends():
    tpr = [i / 400 for i in range(401)]
    fpr, tpr_out, thr = roc_points({"classification": {"roc": {"fpr": [t * t for t in tpr], "tpr": tpr}}})
    assert len(fpr) == len(tpr_out) == len(thr) == 200
    assert (tpr_out[0], tpr_out[-1], fpr[-1]) == (0.0, 1.0, 1.0)
    assert fpr == pytest.approx([t * t for t in tpr_out]) and thr == tpr_out
    assert roc_points({"classification": None}) is None


def _fake_pretrain_run(out: str) -> None:
    run = {"format": "jetlib.pretrain/1", "encoder": {"sha256": "x"}}
    open_store(out).put_bytes("run.json", json.dumps(run).encode())


def test_pretrain_step_runs_torchrun_for_several_gpus(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, env):
        calls.append(cmd)
        _fake_pretrain_run(str(tmp_path / "out"))
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr("jetlib.workflow.subprocess.run", fake_run)
    run = pretrain_step("DATA", str(tmp_path / "out"), preset="cpu", augment="physics", seed=4, gpus_per_node=4)
    assert run["encoder"]["sha256"] == "x"
    assert calls == [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m",
                      "jetlib", "pretrain", "--data", "DATA", "--out", str(tmp_path / "out"), "--preset", "cpu",
                      "--augment", "physics", "--seed", "4"]]
    monkeypatch.setattr("jetlib.workflow.subprocess.run", lambda cmd, env: types.SimpleNamespace(returncode=1))
    with pytest.raises(TrainingError, match="exited with status 1"):
        pretrain_step("DATA", str(tmp_path / "other"), preset="cpu", augment="seed", seed=0, gpus_per_node=2)


def test_pretrain_step_hands_several_nodes_to_the_launcher(tmp_path, monkeypatch):
    seen = {}

    def launch_pretrain(**kw):
        seen.update(kw)
        return {"format": "jetlib.pretrain/1"}

    monkeypatch.setitem(sys.modules, "jetlib.launch", types.SimpleNamespace(launch_pretrain=launch_pretrain))
    assert pretrain_step("DATA", "s3://b/out", preset="gpu", augment="seed", seed=1, nodes=2, gpus_per_node=8,
                         image="jetlib-cuda:9", secret="creds") == {"format": "jetlib.pretrain/1"}
    assert seen == {"data": "DATA", "out": "s3://b/out", "nodes": 2, "gpus_per_node": 8, "image": "jetlib-cuda:9",
                    "preset": "gpu", "augment": "seed", "extra_args": ["--seed", "1"], "secret": "creds"}


def test_read_run_refuses_an_unfinished_or_foreign_folder(tmp_path):
    with pytest.raises(ConfigError, match="no finished run"):
        read_run(str(tmp_path), "jetlib.pretrain/1")
    open_store(str(tmp_path)).put_bytes("run.json", b'{"format": "jetlib.model/1"}')
    with pytest.raises(ConfigError, match="expected a jetlib.pretrain/1 run"):
        read_run(str(tmp_path), "jetlib.pretrain/1")
