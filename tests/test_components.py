"""Each KFP component's function called directly on tiny data, and the logic behind them (jetlib.study,
jetlib.placement, jetlib.steps, jetlib.kfp_outputs).

The chain ingest -> pretrain -> train (finetune, scratch, vgg) -> evaluate -> report runs once per
module (tiny preset, 200 toy jets) and every test checks what one step handed on: store URIs in the
artifacts' metadata, files that exist and verify, metric values equal to the result file's, and
metadata a KFP backend can store.
"""

import json
import math
import sys
import types
from pathlib import Path

import pytest
from kfp import dsl

from components.evaluate import evaluate
from components.ingest import ingest
from components.plan import match_encoders, plan, plan_pretraining, pretrain_gpus, run_folder
from components.pretrain import pretrain
from components.report import report
from components.train import train
from jetlib import tasks
from jetlib.data.store import open_store
from jetlib.errors import ConfigError, TrainingError
from jetlib.kfp_outputs import REPORT_CURVES, flat_metadata, report_curves, result_metrics, roc_points
from jetlib.placement import pretrain_placement, pretrain_step
from jetlib.records import read_run_json
from jetlib.study import PRETRAINED, pretrain_dir, run_dir, training_dir
from jetlib.study import match_encoders as match_items
from jetlib.study import plan as expand
from tests.conftest import write_h5, write_toy_h5

COMMON = {"label_fraction", "seed", "test_jets", "trainable_parameters", "train_seconds", "training"}
# ClassificationMetrics' own schema (kfp.dsl.ClassificationMetrics) nests these; MLMD stores them as structs.
KFP_NESTED = {"confusionMatrix", "confidenceMetrics"}


def read_run(uri: str, fmt: str) -> dict:
    """A finished step's run.json, read as the components read it."""
    return read_run_json(uri, fmt, "step output")


def artifact(kind, root: Path, name: str):
    return kind(name=name, uri=str(root / name))


def trainings(chain_root: Path, store: str, run: str, art: dict, data: dsl.Dataset, encoder: dsl.Model, jobs) -> None:
    for name, problem, mode in jobs:
        art[name] = artifact(dsl.Model, chain_root, name)
        (item,) = match_encoders.python_func(trainings=[{"problem": problem, "mode": mode, "method": "simclr",
                                                         "pretrain_seed": encoder.metadata["seed"]}],
                                             encoders=[encoder])
        train.python_func(dataset=data, encoder=item["encoder"], run=run, problem=problem, mode=mode,
                          label_fraction=0.5, seed=1, model=art[name], preset="tiny")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Run every component's function once, in pipeline order; returns the artifacts by name."""
    root = tmp_path_factory.mktemp("components")
    write_toy_h5(root / "toy.h5", n=200)
    store, art = str(root / "store"), {}
    art["dataset"] = artifact(dsl.Dataset, root, "dataset")
    ingest.python_func(store=store, dataset=art["dataset"], source=str(root / "toy.h5"))
    run = run_folder.python_func(store=store, run_name="", job_id="job-1")
    art["encoder"] = artifact(dsl.Model, root, "encoder")
    pretrain.python_func(dataset=art["dataset"], run=run, encoder=art["encoder"], preset="tiny", seed=3)
    trainings(root, store, run, art, art["dataset"], art["encoder"],
              (("cls", "cls", "finetune"), ("reg", "reg", "scratch"), ("vgg", "cls", "vgg")))
    for name in ("cls", "reg", "vgg"):
        art[f"{name}_metrics"] = artifact(dsl.Metrics, root, f"{name}_metrics")
        art[f"{name}_confusion"] = artifact(dsl.ClassificationMetrics, root, f"{name}_confusion")
        evaluate.python_func(dataset=art["dataset"], model=art[name], run=run, metrics=art[f"{name}_metrics"],
                             confusion=art[f"{name}_confusion"])
    for name, kind in (("html", dsl.HTML), ("markdown", dsl.Markdown), ("summary", dsl.Metrics),
                       *((f"roc_{i}", dsl.ClassificationMetrics) for i in range(1, REPORT_CURVES + 1))):
        art[name] = artifact(kind, root, name)
    report.python_func(run=run, results=[art["cls_metrics"], art["reg_metrics"], art["vgg_metrics"]],
                       **{k: art[k] for k in ("html", "markdown", "summary")},
                       **{f"roc_{i}": art[f"roc_{i}"] for i in range(1, REPORT_CURVES + 1)})
    return {"root": root, "store": store, "run": run, **art}


def test_run_folder_defaults_to_the_kfp_run_id(chain):
    assert chain["run"] == f"{chain['store']}/runs/job-1"
    assert run_folder.python_func(store="s3://b/p/", run_name="exp1", job_id="job-1") == "s3://b/p/runs/exp1"
    # a backend's run id is a UUID ({{workflow.uid}}): a folder name as it is
    uuid = "3f0c1e9a-7b2d-4c55-9a1e-0d2b8c9e4f11"
    assert run_folder.python_func(store="s3://b", run_name="", job_id=uuid) == f"s3://b/runs/{uuid}"


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", ".hidden", "with space", "-x", "x" * 129,
                                  "{{$.pipeline_job_resource_name}}", "ü"])
def test_a_run_name_that_cannot_be_a_folder_is_one_line_exit_2(name, capsys):
    with pytest.raises(ConfigError, match="one folder name"):
        run_dir("s3://b", name)
    with pytest.raises(SystemExit) as e:
        run_folder.python_func(store="s3://b", run_name=name, job_id="id")
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("jetlib: error: run_name must be one folder name") and repr(name) in line


def test_ingest_hands_on_the_store_uri_not_the_data(chain):
    meta = chain["dataset"].metadata
    manifest = json.loads(open_store(meta["uri"]).get_bytes("manifest.json"))
    assert meta["id"] == manifest["id"] and meta["sha256"] == manifest["source"]["sha256"]
    assert meta["jets"] == 200 == meta["train_jets"] + meta["val_jets"] + meta["test_jets"]
    assert meta["labelled"] is True
    # the artifact file is a small pointer holding the same as the metadata
    assert json.loads(Path(chain["dataset"].path).read_text()) == meta


def test_pretrain_points_at_a_finished_pretraining(chain):
    meta = chain["encoder"].metadata
    assert meta["uri"] == f"{chain['run']}/pretrain-simclr-s3" == pretrain_dir(chain["run"], 3, "simclr")
    assert meta["method"] == "simclr" and meta["display_name"] == "encoder simclr s3"
    run = read_run(meta["uri"], "jetlib.pretrain/2")
    assert meta["sha256"] == run["encoder"]["sha256"] and meta["dataset_id"] == chain["dataset"].metadata["id"]
    assert meta["seed"] == 3 and meta["preset"] == "tiny" and meta["loss"] == run["final"]["loss"]
    assert meta["knn_accuracy"] == run["final"]["knn_accuracy"]


def test_trainings_land_in_the_agreed_folders(chain):
    run = chain["run"]
    # the encoder's own record (method, seed) names the folder
    assert chain["cls"].metadata["uri"] == f"{run}/cls-finetune-f0.5-s1-simclr-p3"
    assert chain["cls"].metadata["encoder"] == chain["encoder"].metadata["uri"]
    assert chain["cls"].metadata["display_name"] == "cls-finetune f0.5 s1 (pretrain-simclr-s3)"
    assert chain["reg"].metadata["encoder"] == ""
    assert chain["reg"].metadata["uri"] == f"{run}/reg-scratch-f0.5-s1"  # scratch does not depend on it
    assert chain["vgg"].metadata["uri"] == f"{run}/cls-vgg-f0.5-s1"
    for name in ("cls", "reg", "vgg"):
        meta = chain[name].metadata
        record = read_run(meta["uri"], "jetlib.model/2")
        assert meta["sha256"] == record["model"]["sha256"]
        assert (meta["label_fraction"], meta["seed"]) == (0.5, 1)
    assert read_run(chain["vgg"].metadata["uri"], "jetlib.model/2")["arch"] == "vgg"
    cls_run = read_run(chain["cls"].metadata["uri"], "jetlib.model/2")
    assert cls_run["config"]["init"] == chain["encoder"].metadata["uri"]


def _result(chain, name: str) -> dict:
    results = open_store(f"{chain['run']}/results")
    for key in results.list():
        doc = json.loads(results.get_bytes(key))
        if doc.get("format") == "jetlib.result/2" and doc["model"]["uri"] == chain[name].metadata["uri"]:
            return doc
    raise AssertionError(f"no result for {name}")


def logged_name(chain, name: str) -> str:
    return chain[f"{name}_metrics"].metadata["display_name"]


@pytest.mark.parametrize("name,keys", [(n, tasks.get(task).keys)
                                       for n, task in (("cls", "cls"), ("reg", "reg"), ("vgg", "cls"))])
def test_evaluate_logs_the_result_files_numbers(chain, name, keys):
    result = _result(chain, name)
    logged = dict(chain[f"{name}_metrics"].metadata)
    pretrained = " (pretrain-simclr-s3)" if result["mode"] in PRETRAINED else ""  # the encoder, as train names it
    assert logged.pop("display_name") == f"{result['task']}-{result['mode']} f0.5 s1{pretrained}"
    assert logged_name(chain, name) == chain[name].metadata["display_name"]
    defined = {k for k in keys if result["scalars"][k] is not None}
    assert set(logged) == defined | COMMON
    for k in defined:
        assert logged[k] == pytest.approx(result["scalars"][k])
    assert logged["test_jets"] == result["dataset"]["jets"] == 40


def test_evaluate_logs_the_confusion_matrix_for_classification_only(chain):
    result = _result(chain, "cls")
    confusion = chain["cls_confusion"].metadata
    assert confusion["display_name"] == "cls-finetune f0.5 s1 (pretrain-simclr-s3) confusion"
    assert "confidenceMetrics" not in confusion  # the ROC curves are the report's
    matrix = confusion["confusionMatrix"]
    assert [r["row"] for r in matrix["rows"]] == result["classification"]["confusion_matrix"]
    assert sum(map(sum, (r["row"] for r in matrix["rows"]))) == 40
    assert chain["reg_confusion"].metadata == {}


def test_report_outputs_the_stored_report(chain):
    out = f"{chain['run']}/report"
    html = chain["html"].metadata
    assert html["uri"] == out and html["evaluations"] == 3 and isinstance(html["gaps"], int)
    assert Path(chain["html"].path).read_text() == (Path(out) / "report.html").read_text()
    assert Path(chain["markdown"].path).read_text() == (Path(out) / "report.md").read_text()
    summary = json.loads((Path(out) / "summary.json").read_text())
    logged = dict(chain["summary"].metadata)
    assert logged.pop("display_name") == "study summary"
    assert logged == pytest.approx(summary) and "cls_auc_finetune_f0.5_mean" in summary


def test_report_logs_one_named_roc_curve_per_classification_mode_and_fraction(chain):
    """The KFP 2.17.0 UI overlays at most 10 ROC curves, each labelled by its artifact's ``display_name``
    (kubeflow/pipelines 2.17.0, frontend/src/components/viewers/MetricsVisualizations.tsx,
    ``ConfidenceMetricsSection``: ``maxSelectedRocCurves = 10``)."""
    assert REPORT_CURVES <= 10
    filled = [chain[f"roc_{i}"].metadata for i in range(1, REPORT_CURVES + 1)]
    names = [m["display_name"] for m in filled if m]
    assert names == ["cls-finetune f0.5 (mean of 1)", "cls-vgg f0.5 (mean of 1)"]  # MODES order; reg has no ROC
    # one training per curve here, so the curve is that training's own ROC on the shared grid
    points = filled[0]["confidenceMetrics"]
    fpr, tpr, _ = roc_points(_result(chain, "cls"))
    assert [p["falsePositiveRate"] for p in points] == pytest.approx(fpr, abs=1e-6)
    assert [p["recall"] for p in points] == pytest.approx(tpr, abs=1e-6)


# --- every component's metadata is storable in MLMD --------------------------------------------

def mlmd_custom_property(key: str, value):
    """Stand-in for the launcher's conversion of one metadata value into an MLMD custom property.

    kubeflow/pipelines 2.17.0, backend/src/v2/metadata/converter.go, ``StructValueToMLMDValue``: a
    string becomes a string, a number a double, a bool the int 1 or 0, a list or struct a wrapped
    struct, anything else (``NullValue``: "TODO: support null") the error "unknown/unsupported value
    type" that fails the step after its compute. The executor output file is read first with
    ``protojson.Unmarshal`` (backend/src/v2/component/launcher_v2.go, ``getExecutorOutputFile``),
    which refuses NaN and infinities (not JSON). jetlib's own rule is stricter: flat values only,
    except the nested fields of KFP's ClassificationMetrics schema.
    """
    if value is None:
        raise AssertionError(f"{key}: null cannot be stored in MLMD")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        assert math.isfinite(value), f"{key}: {value} is not JSON"
        return float(value)
    if isinstance(value, str):
        return value
    assert key in KFP_NESTED, f"{key}: {type(value).__name__} is not a flat value"
    json.dumps(value, allow_nan=False)
    return {"struct": value}


def assert_storable(meta: dict) -> None:
    json.dumps(meta, allow_nan=False)  # what protojson reads
    for key, value in meta.items():
        mlmd_custom_property(key, value)


def test_every_components_output_metadata_is_flat_and_storable(chain):
    names = ["dataset", "encoder", "cls", "reg", "vgg", "html", "markdown", "summary",
             *(f"{n}_{k}" for n in ("cls", "reg", "vgg") for k in ("metrics", "confusion")),
             *(f"roc_{i}" for i in range(1, REPORT_CURVES + 1))]
    for name in names:
        assert_storable(chain[name].metadata)
    assert_storable(json.loads(Path(chain["dataset"].path).read_text()))
    for name in ("encoder", "cls", "reg", "vgg"):
        assert json.loads(Path(chain[name].path).read_text()) == chain[name].metadata


def _pretrain_meta(tmp_path, data: Path, **kw) -> dict:
    store = str(tmp_path / "store")
    ds, enc = artifact(dsl.Dataset, tmp_path, "dataset"), artifact(dsl.Model, tmp_path, "encoder")
    ingest.python_func(store=store, dataset=ds, source=str(data))
    assert_storable(ds.metadata)
    pretrain.python_func(dataset=ds, run=f"{store}/runs/r", encoder=enc, preset="tiny", **kw)
    assert_storable(enc.metadata)
    return {"dataset": ds.metadata, "encoder": enc.metadata}


def test_an_unlabelled_source_leaves_knn_accuracy_out_instead_of_null(tmp_path):
    write_h5(tmp_path / "images.h5", n=60, labelled=False)
    meta = _pretrain_meta(tmp_path, tmp_path / "images.h5")
    assert meta["dataset"]["labelled"] is False
    assert "knn_accuracy" not in meta["encoder"] and math.isfinite(meta["encoder"]["loss"])


def test_monitor_bank_0_leaves_knn_accuracy_out_instead_of_null(tmp_path, monkeypatch):
    from jetlib import pretrain as pretrain_module

    monkeypatch.setitem(pretrain_module.PRESETS, "tiny", {**pretrain_module.PRESETS["tiny"], "monitor_bank": 0})
    write_toy_h5(tmp_path / "toy.h5", n=80)
    meta = _pretrain_meta(tmp_path, tmp_path / "toy.h5")
    assert meta["dataset"]["labelled"] is True and "knn_accuracy" not in meta["encoder"]


def test_flat_metadata_drops_undefined_values_and_refuses_nested_ones():
    assert flat_metadata({"a": None, "b": float("nan"), "c": float("inf"), "d": 1, "e": 0.5, "f": True, "g": ""}) \
        == {"d": 1, "e": 0.5, "f": True, "g": ""}
    for bad in ([1], {"x": 1}, (1,), b"x"):
        with pytest.raises(TypeError, match="expected a string, number or bool"):
            flat_metadata({"k": bad})


# --- pretraining refuses GPUs it was asked for and cannot see -----------------------------------

@pytest.mark.parametrize("preset,nodes,gpus,visible,expected", [
    ("auto", 1, 0, 0, ("cpu", "cpu")),  # the CPU pipeline: 0 GPUs asked
    ("auto", 1, 0, 2, ("cpu", "cpu")),  # 0 asked: the CPU, even where a GPU happens to be visible
    ("tiny", 1, 0, 0, ("tiny", "cpu")),
    ("auto", 1, 1, 1, ("gpu", "cuda")),
    ("auto", 1, 4, 8, ("gpu", "cuda")),
    ("cpu", 1, 1, 1, ("cpu", "cuda")),  # an explicit preset is kept
    ("auto", 2, 8, 0, ("gpu", "auto")),  # multi-node: this pod waits with no GPU; the workers train gpu
    ("auto", 2, 0, 0, ("cpu", "cpu")),
])
def test_pretrain_placement(preset, nodes, gpus, visible, expected):
    assert pretrain_placement(preset, nodes, gpus, visible) == expected


@pytest.mark.parametrize("preset", ["auto", "tiny", "cpu", "gpu"])
def test_pretraining_refuses_to_fall_back_to_the_cpu_when_gpus_were_asked(tmp_path, preset, capsys):
    with pytest.raises(ConfigError, match=r"gpus_per_node=2 but this pod sees 1 CUDA device\(s\): refusing"):
        pretrain_placement(preset, 1, 2, 1)
    # on this GPU-less machine, through the component: one line, exit 2, before any data is read
    ds = artifact(dsl.Dataset, tmp_path, "dataset")
    ds.metadata["uri"] = str(tmp_path / "no-such-dataset")
    with pytest.raises(SystemExit) as e:
        pretrain.python_func(dataset=ds, run=str(tmp_path / "run"), encoder=artifact(dsl.Model, tmp_path, "enc"),
                             preset=preset, gpus_per_node=1)
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("jetlib: error: gpus_per_node=1 but this pod sees 0 CUDA device(s)")
    assert not (tmp_path / "run").exists()


def test_pretrain_gpus_is_the_pods_gpu_limit_as_a_string():
    assert pretrain_gpus.python_func(nodes=1, gpus_per_node=4) == "4"
    assert pretrain_gpus.python_func(nodes=1, gpus_per_node=0) == "0"
    assert pretrain_gpus.python_func(nodes=3, gpus_per_node=8) == "0"  # the waiting pod holds no GPU
    with pytest.raises(SystemExit) as e:
        pretrain_gpus.python_func(nodes=0, gpus_per_node=1)
    assert e.value.code == 2


# --- the logic behind the components -----------------------------------------------------------

def test_plan_expands_the_grid_into_one_loop_and_names_the_folder():
    items = plan.python_func(store="/s", run_name="r", job_id="j", label_fractions=[0.1, 0.01], seeds=[0.0, 1],
                             modes=["cls-scratch", "cls-vgg", "reg-finetune"], methods=["simclr"], pretrain_seeds=[0])
    assert plan_pretraining.python_func(store="/s", run_name="r", job_id="j", methods=["simclr"],
                                        pretrain_seeds=[0]) == [{"method": "simclr", "seed": 0, "folder": "/s/runs/r"}]
    assert len(items) == 2 * 2 * 3 and {i["folder"] for i in items} == {"/s/runs/r"}
    assert {(i["fraction"], i["seed"], i["problem"], i["mode"]) for i in items} == {
        (f, s, p, m) for f in (0.1, 0.01) for s in (0, 1)
        for p, m in (("cls", "scratch"), ("cls", "vgg"), ("reg", "finetune"))}
    assert plan.python_func(store="/s", run_name="", job_id="j", label_fractions=[0.1], seeds=[2],
                            modes=["cls-vgg"], methods=["simclr"], pretrain_seeds=[0]) == [
        {"fraction": 0.1, "seed": 2, "problem": "cls", "mode": "vgg", "folder": "/s/runs/j"}]


def test_pretrained_trainings_run_once_per_method_and_pretraining_seed_and_baselines_once():
    grid = {"store": "/s", "run_name": "r", "job_id": "j", "methods": ["simclr", "vicreg"], "pretrain_seeds": [0, 5]}
    pre = plan_pretraining.python_func(**grid)
    items = plan.python_func(**grid, label_fractions=[0.1], seeds=[0, 1],
                             modes=["cls-finetune", "cls-linear", "cls-scratch", "cls-vgg"])
    assert [(p["method"], p["seed"]) for p in pre] == [("simclr", 0), ("simclr", 5), ("vicreg", 0), ("vicreg", 5)]
    count = {}
    for i in items:
        key = (i["mode"], i.get("method"), i.get("pretrain_seed"))
        count[key] = count.get(key, 0) + 1
    assert count == {**{(m, meth, s): 2 for m in ("finetune", "linear") for meth in ("simclr", "vicreg")
                        for s in (0, 5)}, ("scratch", None, None): 2, ("vgg", None, None): 2}
    # every pretrained item finds the one encoder of its method and seed; scratch and VGG none
    encoders = [{"method": p["method"], "seed": p["seed"], "uri": pretrain_dir("R", p["seed"], p["method"])}
                for p in pre]
    matched = match_items(items, encoders)
    assert [{k: v for k, v in m.items() if k != "encoder"} for m in matched] == items
    for m in matched:
        want = pretrain_dir("R", m["pretrain_seed"], m["method"]) if m["mode"] in PRETRAINED else ""
        assert m["encoder"] == want
    with pytest.raises(ConfigError, match="starts from the vicreg pretraining with seed 5"):
        match_items(items, encoders[:3])


def test_match_encoders_reads_the_pretraining_artifacts(tmp_path, capsys):
    arts = []
    for method, seed in (("simclr", 0), ("byol", 0)):
        a = artifact(dsl.Model, tmp_path, f"{method}{seed}")
        a.metadata.update({"method": method, "seed": seed, "uri": f"R/pretrain-{method}-s{seed}"})
        arts.append(a)
    items = [{"problem": "cls", "mode": "linear", "method": "byol", "pretrain_seed": 0},
             {"problem": "reg", "mode": "scratch"}]
    assert [i["encoder"] for i in match_encoders.python_func(trainings=items, encoders=arts)] == [
        "R/pretrain-byol-s0", ""]
    with pytest.raises(SystemExit) as e:
        match_encoders.python_func(trainings=[{**items[0], "pretrain_seed": 1}], encoders=arts)
    assert e.value.code == 2 and "starts from the byol pretraining with seed 1" in capsys.readouterr().err


@pytest.mark.parametrize("fractions,seeds,modes,match", [
    ([0.1], [0], ["cls-bogus"], "unknown 'cls-bogus'"),
    ([0.1], [0], [], "none given"),
    ([1.5], [0], ["cls-finetune"], r"label_fractions\[0\]: must be less than or equal to 1, got 1.5"),
    (["a"], [0], ["cls-finetune"], "label_fractions\\[0\\]: must be a valid number"),
    ([0.1], [0.5], ["cls-finetune"], "seeds\\[0\\]: must be a valid integer, got a number with a fractional part"),
    ([], [0], ["cls-finetune"], "at least one"),
    ([0.1], [], ["cls-finetune"], "at least one"),
])
def test_plan_refuses_bad_values_so_the_loop_is_never_empty(fractions, seeds, modes, match):
    with pytest.raises(ConfigError, match=match):
        expand(fractions, seeds, modes)


@pytest.mark.parametrize("setting,value", [("preset", "gpuu"), ("augment", "physic"), ("finetune_augment", "all"),
                                           ("encoder", "resnet15")])
def test_plan_refuses_a_misspelt_run_setting_before_any_work(setting, value, tmp_path, capsys):
    """preset, augment, finetune_augment and encoder reach every pretraining and training by name: plan checks
    them, so a typo ends the run in its first step, before the simulation, ingest or any pretraining."""
    good = plan.python_func(store=str(tmp_path), run_name="r", job_id="j", label_fractions=[0.1], seeds=[0],
                            modes=["cls-vgg"], methods=["simclr"], pretrain_seeds=[0], preset="cpu",
                            augment="physics", finetune_augment="seed", encoder="vit")
    assert [i["mode"] for i in good] == ["vgg"]
    with pytest.raises(SystemExit) as e:
        plan.python_func(store=str(tmp_path), run_name="r", job_id="j", label_fractions=[0.1], seeds=[0],
                         modes=["cls-vgg"], methods=["simclr"], pretrain_seeds=[0], **{setting: value})
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and f"{setting}: {value!r} is not one of" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_training_dir_names_the_encoder_only_when_used():
    assert training_dir("R", "cls", "linear", 0.01, 2, 7) == "R/cls-linear-f0.01-s2-simclr-p7"
    assert training_dir("R", "cls", "finetune", 0.1, 0, 1, "vicreg") == "R/cls-finetune-f0.1-s0-vicreg-p1"
    assert training_dir("R", "reg", "scratch", 1.0, 0, 7, "vicreg") == "R/reg-scratch-f1-s0"
    assert pretrain_dir("R", 2, "barlowtwins") == "R/pretrain-barlowtwins-s2"


def test_train_refuses_an_unknown_training(tmp_path, capsys):
    data = artifact(dsl.Dataset, tmp_path, "d")
    data.metadata["uri"] = str(tmp_path / "data")
    with pytest.raises(SystemExit) as e:
        train.python_func(dataset=data, run=str(tmp_path), problem="reg", mode="vgg", label_fraction=0.1, seed=0,
                          model=artifact(dsl.Model, tmp_path, "m"))
    assert e.value.code == 2 and "no training reg-vgg" in capsys.readouterr().err


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


def test_report_curves_average_seeds_per_mode_and_fraction():
    grid = [round(i / 199, 6) for i in range(200)]  # the grid results store

    def res(mode, fraction, power):
        return {"task": "cls", "mode": mode, "label_fraction": fraction,
                "classification": {"roc": {"tpr": grid, "fpr": [t ** power for t in grid]}}}

    results = [res("scratch", 0.1, 1), res("finetune", 0.1, 2), res("finetune", 0.1, 4), res("vgg", 0.01, 3),
               {"task": "reg", "mode": "finetune", "label_fraction": 0.1, "classification": None}]
    curves = report_curves(results)
    assert [c[0] for c in curves] == ["cls-vgg f0.01 (mean of 1)", "cls-finetune f0.1 (mean of 2)",
                                      "cls-scratch f0.1 (mean of 1)"]
    name, fpr, tpr, thr = curves[1]
    assert fpr == pytest.approx([(t ** 2 + t ** 4) / 2 for t in grid], abs=1e-6) and tpr == thr
    many = [res(m, f, 1) for m in ("finetune", "linear", "scratch", "vgg") for f in (0.01, 0.1, 0.5)]
    assert len(report_curves(many)) == REPORT_CURVES  # 12 asked, the slots the report has


def _fake_pretrain_run(out: str) -> None:
    run = {"format": "jetlib.pretrain/2", "encoder": {"key": "encoder.pt", "sha256": "f" * 64},  # passes its schema
           "config": {"seed": 4, "method": "simclr"}, "dataset": {"uri": "DATA", "id": "abc"}}
    open_store(out).put_bytes("run.json", json.dumps(run).encode())


def test_pretrain_step_runs_torchrun_for_several_gpus(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, env):
        calls.append(cmd)
        _fake_pretrain_run(str(tmp_path / "out"))
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr("jetlib.placement.subprocess.run", fake_run)
    run = pretrain_step("DATA", str(tmp_path / "out"), preset="auto", augment="physics", seed=4, gpus_per_node=4,
                        visible_gpus=4)
    assert run["encoder"]["sha256"] == "f" * 64
    assert calls == [[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m",
                      "jetlib", "pretrain", "--data", "DATA", "--out", str(tmp_path / "out"), "--preset", "gpu",
                      "--augment", "physics", "--seed", "4", "--method", "simclr", "--encoder", "resnet"]]
    monkeypatch.setattr("jetlib.placement.subprocess.run", lambda cmd, env: types.SimpleNamespace(returncode=1))
    with pytest.raises(TrainingError, match="exited with status 1"):
        pretrain_step("DATA", str(tmp_path / "other"), preset="cpu", augment="seed", seed=0, gpus_per_node=2,
                      visible_gpus=2)


def test_pretrain_step_hands_several_nodes_to_the_launcher(tmp_path, monkeypatch):
    seen = {}

    def launch_pretrain(**kw):
        seen.update(kw)
        return {"format": "jetlib.pretrain/2"}

    monkeypatch.setitem(sys.modules, "jetlib.cluster", types.SimpleNamespace(launch_pretrain=launch_pretrain))
    # this pod sees no GPU (it asked for none): auto still means the gpu preset for the GPU workers
    assert pretrain_step("DATA", "s3://b/out", preset="auto", augment="seed", seed=1, method="vicreg", encoder="vit",
                         nodes=2, gpus_per_node=8, image="jetlib-cuda:9", secret="creds", visible_gpus=0) == \
        {"format": "jetlib.pretrain/2"}
    assert seen == {"data": "DATA", "out": "s3://b/out", "nodes": 2, "gpus_per_node": 8, "image": "jetlib-cuda:9",
                    "preset": "gpu", "augment": "seed", "secret": "creds",
                    "extra_args": ["--seed", "1", "--method", "vicreg", "--encoder", "vit"]}


def test_read_run_refuses_an_unfinished_or_foreign_folder(tmp_path):
    with pytest.raises(ConfigError, match="no finished run"):
        read_run(str(tmp_path), "jetlib.pretrain/2")
    open_store(str(tmp_path)).put_bytes("run.json", b'{"format": "jetlib.model/2"}')
    with pytest.raises(ConfigError, match="expected a jetlib.pretrain/2 run"):
        read_run(str(tmp_path), "jetlib.pretrain/2")


def test_a_component_out_of_memory_is_one_line_exit_5_and_a_bug_keeps_its_traceback(capsys):
    """In a pod nobody reruns with --debug: the CPU allocator's refusal (c10/core/impl/alloc_cpu.cpp's
    message) is the CLI's one line and exit 5; any other exception still propagates (a bug)."""
    from jetlib.steps import step_errors

    with pytest.raises(SystemExit) as e, step_errors():
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 1234567890 bytes.")
    assert e.value.code == 5
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jetlib: error: out of memory (")
    with pytest.raises(RuntimeError, match="boom"), step_errors():
        raise RuntimeError("boom")


@pytest.mark.slow  # two tune searches in child processes: ~23 s
def test_tune_leaves_the_recipe_in_the_run_and_a_rerun_continues_the_study_from_the_store(chain, monkeypatch):
    """Under kfp.local (no ``KUBERNETES_SERVICE_HOST``) the tune component searches with Optuna in a scratch
    folder and uploads the study after each trial; a second run with more trials downloads it and adds only
    the missing ones (the first trial keeps its seed-0 settings although this search's sampler has seed 1).
    The method's pretraining with ``tune_trials`` then runs the recipe: its run.json holds the values."""
    from components.tune import tune
    from jetlib.tune.step import recipe_uri, tune_dir

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    args = {"dataset": chain["dataset"], "store": chain["store"], "run_name": "", "job_id": "job-1",
            "method": "simclr", "preset": "tiny", "epochs": 1}
    tune.python_func(trials=1, seed=0, **args)
    folder = open_store(tune_dir(chain["run"], "simclr"))
    (first,) = json.loads(folder.get_bytes("trials.json"))
    tune.python_func(trials=2, seed=1, **args)
    rows = json.loads(folder.get_bytes("trials.json"))
    assert [r["number"] for r in rows] == [0, 1] and rows[0] == first and rows[1]["params"] != first["params"]
    recipe = json.loads(folder.get_bytes("recipe.json"))
    best = max((r for r in rows if r["state"] == "complete"), key=lambda r: r["value"])
    assert recipe["objective"]["value"] == best["value"] and recipe["study"]["trials"] == 2
    temperature = best["params"]["temperature"]
    assert recipe["values"]["method_params"] == {"learn_temperature": False, "temperature": temperature}
    enc = artifact(dsl.Model, chain["root"], "tuned-encoder")
    pretrain.python_func(dataset=chain["dataset"], run=chain["run"], encoder=enc, preset="tiny", seed=7,
                         tune_trials=2, tune_epochs=1)
    assert enc.metadata["recipe"] == recipe_uri(chain["run"], "simclr")
    from jetlib.records import PRETRAIN

    run = read_run(enc.metadata["uri"], PRETRAIN)
    assert (run["config"]["lr"], run["config"]["weight_decay"]) == (recipe["values"]["lr"],
                                                                    recipe["values"]["weight_decay"])
    assert run["method"]["params"]["temperature"] == temperature
    assert run["method"]["params"]["learn_temperature"] is False


def test_pretrain_step_hands_the_recipe_to_torchrun_and_to_the_launcher(tmp_path, monkeypatch):
    calls, seen = [], {}

    def fake_run(cmd, env):
        calls.append(cmd)
        _fake_pretrain_run(str(tmp_path / "out"))
        return types.SimpleNamespace(returncode=0)

    monkeypatch.setattr("jetlib.placement.subprocess.run", fake_run)
    pretrain_step("DATA", str(tmp_path / "out"), preset="gpu", augment="seed", seed=0, gpus_per_node=2,
                  visible_gpus=2, recipe="s3://b/runs/r/tune/simclr/recipe.json")
    assert calls[0][-2:] == ["--recipe", "s3://b/runs/r/tune/simclr/recipe.json"]
    monkeypatch.setitem(sys.modules, "jetlib.cluster", types.SimpleNamespace(
        launch_pretrain=lambda **kw: seen.update(kw) or {}))
    pretrain_step("DATA", "s3://b/out", preset="gpu", augment="seed", seed=0, nodes=2, gpus_per_node=1,
                  recipe="s3://b/r.json")
    assert seen["extra_args"][-2:] == ["--recipe", "s3://b/r.json"]
