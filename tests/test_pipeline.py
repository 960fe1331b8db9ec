"""The compiled pipeline: fresh YAML equals the committed one, Kubernetes settings land where they
should, and the whole DAG runs under kfp.local (tiny preset) with stable metric keys and loud failures."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jetlib.errors import TrainingError
from pipelines.jet_ssl import NAMES, SHM
from pipelines.local import run_local
from tests.conftest import write_toy_h5

ROOT = Path(__file__).resolve().parents[1]
GPU_STEPS = {"pretrain", "train"}
STEPS = {"run-folder", "plan", "plan-pretraining", "ingest", "tune", "pretrain-size", "pretrain", "match-encoders",
         "train", "evaluate", "report", "export"}  # the CPU pipeline's
GPU_ONLY = {"pretrain-gpus"}  # what the GPU pipeline adds: the pretraining pod's GPU limit as a string
NO_STORE = {"plan", "plan-pretraining", "run-folder", "pretrain-gpus", "pretrain-size", "match-encoders"}
SECRET_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "JETLIB_S3_ENDPOINT"}


def compile_into(out: Path, **env) -> dict[str, str]:
    """Compile both pipelines as ``make compile`` does, with the image variables unset unless given."""
    clean = {k: v for k, v in os.environ.items() if k not in ("JETLIB_IMAGE", "JETLIB_CUDA_IMAGE")}
    subprocess.run([sys.executable, "-m", "pipelines.jet_ssl", "--out", str(out)], cwd=ROOT, check=True,
                   env={**clean, **env}, capture_output=True)
    return {name: (out / name).read_text() for name in ("jet_ssl.yaml", "jet_ssl_cpu.yaml")}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_into(tmp_path_factory.mktemp("compiled"))


def load(text: str) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(text)
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def tasks(spec: dict) -> dict[str, dict]:
    """Every task of the DAG, loops' bodies included, by name."""
    found = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        found.update(comp.get("dag", {}).get("tasks", {}))
    return found


@pytest.mark.parametrize("name", ["jet_ssl.yaml", "jet_ssl_cpu.yaml"])
def test_committed_yaml_is_what_make_compile_writes(compiled, name):
    assert (ROOT / "pipelines" / name).read_text() == compiled[name], f"pipelines/{name} is stale: run make compile"


@pytest.mark.parametrize("name", ["jet_ssl.yaml", "jet_ssl_cpu.yaml"])
def test_every_step_is_in_the_dag(compiled, name):
    spec, _ = load(compiled[name])
    executors = {e.removeprefix("exec-") for e in spec["deploymentSpec"]["executors"]}
    assert executors == (STEPS | GPU_ONLY if name == "jet_ssl.yaml" else STEPS)
    assert set(tasks(spec)) >= executors
    # the fan-ins: match-encoders takes every encoder of the pretraining loop, the report every
    # evaluation of the training loop
    for consumer, loop in (("match-encoders", "for-loop-3"), ("report", "for-loop-4")):
        inputs = spec["root"]["dag"]["tasks"][consumer]["inputs"]["artifacts"]
        assert {a["taskOutputArtifact"]["producerTask"] for a in inputs.values()} == {loop}


def test_gpu_resources_on_gpu_steps_only(compiled):
    spec, k8s = load(compiled["jet_ssl.yaml"])
    for name, executor in spec["deploymentSpec"]["executors"].items():
        step = name.removeprefix("exec-")
        container, settings = executor["container"], k8s.get(name, {})
        accelerator = container.get("resources", {}).get("accelerator")
        if step in GPU_STEPS:
            assert accelerator["resourceType"] == "nvidia.com/gpu", step
            assert container["image"] == "jetlib-cuda:0.1.0"
            assert settings["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert settings["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        else:
            assert accelerator is None and "nodeSelector" not in settings and "tolerations" not in settings, step
            assert container["image"] == "jetlib:0.1.0"
    # pretraining asks for the string the pretrain-gpus step returns; the trainings for one
    resources = {s: spec["deploymentSpec"]["executors"][f"exec-{s}"]["container"]["resources"] for s in GPU_STEPS}
    assert resources["pretrain"]["accelerator"]["resourceCount"] == \
        "{{$.inputs.parameters['pipelinechannel--pretrain-gpus-Output']}}"
    assert resources["train"]["accelerator"]["resourceCount"] == "1"


def test_cpu_pipeline_has_no_accelerators_selectors_or_tolerations(compiled):
    spec, k8s = load(compiled["jet_ssl_cpu.yaml"])
    assert spec["pipelineInfo"]["name"] == "jet-ssl-cpu"
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert "accelerator" not in executor["container"].get("resources", {}), name
        assert executor["container"]["image"] == "jetlib:0.1.0"
        assert not {"nodeSelector", "tolerations"} & set(k8s.get(name, {})), name


@pytest.mark.parametrize("name", ["jet_ssl.yaml", "jet_ssl_cpu.yaml"])
def test_requests_secret_env_and_shm(compiled, name):
    spec, k8s = load(compiled[name])
    for executor_name, executor in spec["deploymentSpec"]["executors"].items():
        step = executor_name.removeprefix("exec-")
        resources = executor["container"]["resources"]
        assert resources["resourceCpuRequest"] and resources["resourceMemoryRequest"], step
        settings = k8s.get(executor_name, {})
        if step in NO_STORE:  # no store access
            assert "secretAsEnv" not in settings
            continue
        (secret,) = settings["secretAsEnv"]
        assert {(m["secretKey"], m["envVar"]) for m in secret["keyToEnv"]} == {(k, k) for k in SECRET_ENV}
        # the Secret's name is a run parameter (default jetlib-s3), never a literal in the YAML
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("store_secret")
        shm = settings.get("emptyDirMounts")
        if step in GPU_STEPS:  # memory-backed and bounded (SHM: it counts against the pod's memory)
            limit = SHM[name == "jet_ssl.yaml"][step]
            assert shm == [{"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm", "sizeLimit": limit}]
        else:
            assert shm is None
    assert spec["root"]["inputDefinitions"]["parameters"]["store_secret"]["defaultValue"] == "jetlib-s3"


@pytest.mark.parametrize("name", ["jet_ssl.yaml", "jet_ssl_cpu.yaml"])
def test_no_credentials_in_the_yaml(compiled, name):
    text = compiled[name]
    assert not re.search(r"AKIA[0-9A-Z]{16}|minioadmin|aws_secret_access_key\s*[:=]|moto-test", text, re.I)
    spec, _ = load(text)
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "env" not in executor["container"]  # credentials only ever come from the Secret


@pytest.mark.parametrize("name", ["jet_ssl.yaml", "jet_ssl_cpu.yaml"])
def test_caching_and_retries(compiled, name):
    spec, _ = load(compiled[name])
    every = tasks(spec)
    cache = {t: every[t].get("cachingOptions", {}).get("enableCache", False) for t in STEPS}
    assert cache["ingest"] and cache["pretrain"] and cache["train"]
    assert not any(cache[t] for t in ("report", "plan", "plan-pretraining", "run-folder", "match-encoders", "export"))
    retried = {t for t in STEPS if every[t].get("retryPolicy", {}).get("maxRetryCount", 0) > 0}
    assert retried == {"ingest"}  # a 2.17.0 backend drops retries inside a loop (tests/test_backend.py)


def test_images_come_from_the_environment_at_compile_time(tmp_path):
    text = compile_into(tmp_path, JETLIB_IMAGE="reg.example/jetlib:dev", JETLIB_CUDA_IMAGE="reg.example/cuda:dev")
    spec, _ = load(text["jet_ssl.yaml"])
    images = {n.removeprefix("exec-"): e["container"]["image"] for n, e in spec["deploymentSpec"]["executors"].items()}
    assert {images[s] for s in GPU_STEPS} == {"reg.example/cuda:dev"}
    assert {images[s] for s in STEPS - GPU_STEPS} == {"reg.example/jetlib:dev"}
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == "reg.example/cuda:dev"


# --- the compiled DAG under kfp.local ---------------------------------------------------------------

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("dag")
    write_toy_h5(root / "toy.h5", n=160)
    return root


def run_dag(root: Path, name: str, **params) -> Path:
    """Run the committed CPU pipeline; returns the kfp.local pipeline root of this run."""
    kfp_root = root / f"kfp-{name}"
    args = {"store": str(root / "store"), "source": str(root / "toy.h5"), "run_name": name, "preset": "tiny",
            "label_fractions": [0.5], "modes": ["cls-finetune", "reg-scratch", "cls-vgg"], **params}
    run_local(args, ROOT / "pipelines" / "jet_ssl_cpu.yaml", pipeline_root=kfp_root)
    return kfp_root


def metrics_keys(kfp_root: Path) -> dict[str, list[set[str]]]:
    """Keys of every Metrics artifact the run logged (its display name aside), by producing step."""
    found: dict[str, list[set[str]]] = {}
    for out in sorted(kfp_root.rglob("executor_output.json")):
        for name, group in json.loads(out.read_text()).get("artifacts", {}).items():
            if name in ("metrics", "summary"):
                found.setdefault(out.parent.name, []).extend(set(a["metadata"]) - {"display_name"}
                                                             for a in group["artifacts"])
    return found


def stable(keys: set[str]) -> tuple[str, ...]:
    """Keys without background rejection: 1/eps_B at a working point is undefined (null, so left out,
    never faked) when no background jet passes, which some tiny toy models hit by chance."""
    return tuple(sorted(k for k in keys if "rej" not in k))


def executor_output(kfp_root: Path, task: str) -> dict:
    (out,) = kfp_root.rglob(f"{task}/executor_output.json")
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def two_runs(toy):
    """The module's only two full DAG runs, which every DAG test below reads (each run starts ~20 step
    processes): ``a`` with the defaults (SimCLR, pretraining seed 0) and three modes at seeds 0, 1; ``b``
    with other values of every run parameter a study varies: seeds 2, 3, physics augmentations, two
    methods (SimCLR and VICReg) at pretraining seed 1, so fine-tuning runs once per pretraining, each
    method tuned first (one trial of one epoch)."""
    with pytest.MonkeyPatch.context() as env:  # kfp.local's steps, even on a CI runner that is itself a pod:
        env.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # the tune step runs Optuna here, not Katib
        first = run_dag(toy, "a", seeds=[0, 1])
        second = run_dag(toy, "b", seeds=[2, 3], augment="physics", finetune_augment="seed", pretrain_seeds=[1],
                         methods=["simclr", "vicreg"], tune_trials=1, tune_epochs=1)
    return first, second


@pytest.mark.slow
def test_dag_runs_locally_with_the_same_metric_keys_for_different_parameters(toy, two_runs):
    from jetlib.kfp_outputs import TRAINING_KEY

    first, second = two_runs
    runs = toy / "store" / "runs"
    # a: 3 modes x 2 seeds; b: the same plus cls-finetune once more (a second method)
    for name, n in (("a", 6), ("b", 8)):
        assert len(list((runs / name / "results").glob("*.json"))) == n
        assert (runs / name / "report" / "report.html").stat().st_size > 0
    keys_a, keys_b = metrics_keys(first), metrics_keys(second)
    assert keys_a.keys() == keys_b.keys() == {"evaluate", "report"}
    # every evaluation names its training in a row of its own (jetlib.kfp_outputs.TRAINING_KEY)
    cls = {"accuracy", "f1", "roc_auc", "label_fraction", "seed", "test_jets", "trainable_parameters", "train_seconds",
           TRAINING_KEY}
    reg = cls - {"accuracy", "f1", "roc_auc"} | {"mse", "rmse", "mae", "r2", "relative_resolution"}
    assert sorted(map(stable, keys_a["evaluate"])) == sorted([stable(cls)] * 4 + [stable(reg)] * 2)
    assert sorted(map(stable, keys_b["evaluate"])) == sorted([stable(cls)] * 6 + [stable(reg)] * 2)
    # the same report keys for the same trainings; the second method adds only keys of its own, and the
    # searches of b (each method tuned first) the objective of each recipe chosen
    (report_a,), (report_b,) = map(stable, keys_a["report"]), map(stable, keys_b["report"])
    assert set(report_a) <= set(report_b)
    extra = set(report_b) - set(report_a)
    assert {k for k in extra if "vicreg" not in k} == {"tune_simclr_knn_accuracy"}
    assert "tune_vicreg_knn_accuracy" in extra
    (summary,) = keys_a["report"]
    assert json.loads((runs / "a" / "report" / "summary.json").read_text()).keys() == summary
    # the report's ROC slots: cls-finetune and cls-vgg at the one fraction, averaged over both seeds
    rocs = executor_output(first, "report")["artifacts"]
    names = [rocs[f"roc_{i}"]["artifacts"][0]["metadata"].get("display_name") for i in range(1, 9)]
    assert names[:2] == ["cls-finetune f0.5 (mean of 2)", "cls-vgg f0.5 (mean of 2)"]
    assert all(n in (None, f"roc_{i}") for i, n in enumerate(names[2:], 3))  # unused slots stay empty
    html = executor_output(second, "report")["artifacts"]["html"]["artifacts"][0]["metadata"]
    assert html["evaluations"] == 8 and html["uri"].endswith("runs/b/report")


def test_a_failing_step_fails_the_run_with_its_error(toy, capfd):
    with pytest.raises(TrainingError, match="plan"):
        run_dag(toy, "bad", seeds=[0], modes=["cls-finetune", "cls-bogus"])
    captured = capfd.readouterr()
    assert "jetlib: error: modes: unknown 'cls-bogus'" in captured.out + captured.err
    # the plan runs first: nothing was simulated, ingested or trained for it
    assert not (toy / "store" / "runs" / "bad").exists()
    assert "Executing task 'ingest'" not in re.sub(r"\x1b\[[0-9;]*m", "", captured.out + captured.err)


def test_the_run_folder_defaults_to_the_run_id_under_kfp_local(tmp_path):
    """With ``run_name`` empty the folder is the run's id: kubeflow/pipelines 2.17.0,
    backend/src/v2/driver/resolve.go (``resolveInputParameter``) resolves the exact constant
    ``{{$.pipeline_job_uuid}}`` to ``opts.RunID``, which backend/src/v2/compiler/argocompiler/argo.go
    (``runID``) sets to ``{{workflow.uid}}``, unique per run; kfp.local 2.17 resolves it to a random id
    (kfp/local/placeholder_utils.py, ``resolve_individual_placeholder``). ``{{$.pipeline_job_name}}``
    would be the run's display name there (``opts.RunDisplayName``: shared by every ``make submit``
    with one ``RUN``), and kfp.local 2.17 leaves ``{{$.pipeline_job_resource_name}}`` unresolved."""
    from kfp import compiler, components, dsl, local

    from components.plan import run_folder

    @dsl.pipeline(name="folder")
    def folder(store: str) -> str:
        return run_folder(store=store, run_name="", job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER).output

    compiler.Compiler().compile(folder, str(tmp_path / "folder.yaml"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    pipeline = components.load_component_from_file(str(tmp_path / "folder.yaml"))
    first, second = (pipeline(store="s3://b/p").output for _ in range(2))
    assert re.fullmatch(r"s3://b/p/runs/\d+", first) and first != second


def test_the_demo_headline_shows_a_mean_without_spread_for_one_seed():
    from pipelines.demo import headline

    summary = {"cls_auc_vgg_f0.5_mean": 0.71, "cls_auc_finetune_f0.5_mean": 0.7, "cls_auc_finetune_f0.5_std": 0.01}
    assert headline(summary, [0.5]) == ["test AUC at 0.5 labels (mean ± std over seeds): finetune 0.700 ± 0.010, "
                                        "vgg 0.710"]
    assert headline({}, [0.5]) == []


@pytest.mark.slow
def test_pretrained_trainings_run_once_per_method_and_pretraining_seed(toy, two_runs):
    """Two methods at a pretraining seed other than the default under kfp.local (run ``b``): two
    pretrainings in the first loop, the fine-tuning once per pretraining and scratch and VGG once in the
    second, each fine-tuning started from the encoder its folder names (its run.json's ``init``). The
    full method x seed product is planned in tests/test_components.py; this proves the wiring. That
    the loop is never empty, whatever the modes (only VGG, no VGG), is ``plan``'s rule
    (test_components.py: ``test_plan_expands_the_grid_into_one_loop_and_names_the_folder``,
    ``test_plan_refuses_bad_values_so_the_loop_is_never_empty``)."""
    from jetlib.study import pretrain_dir, training_dir

    run = str(toy / "store" / "runs" / "b")
    pairs = [("simclr", 1), ("vicreg", 1)]
    for method, pseed in pairs:
        pre = json.loads(Path(pretrain_dir(run, pseed, method), "run.json").read_text())
        assert (pre["config"]["method"], pre["config"]["seed"]) == (method, pseed)
        for seed in (2, 3):
            tuned = json.loads(Path(training_dir(run, "cls", "finetune", 0.5, seed, pseed, method),
                                    "run.json").read_text())
            assert tuned["config"]["init"] == pretrain_dir(run, pseed, method)
    trainings = sorted(p.parent.name for p in Path(run).glob("cls-*/run.json"))
    assert trainings == sorted([Path(training_dir(run, "cls", "finetune", 0.5, s, ps, m)).name
                                for m, ps in pairs for s in (2, 3)] + ["cls-vgg-f0.5-s2", "cls-vgg-f0.5-s3"])
    results = [json.loads(r.read_text()) for r in Path(run, "results").glob("*.json")]
    assert sorted(r["mode"] for r in results) == ["finetune"] * 4 + ["scratch"] * 2 + ["vgg"] * 2


@pytest.mark.parametrize("name", ["jet_ssl.yaml", "jet_ssl_cpu.yaml"])
def test_the_default_run_pretrains_once_as_before_methods_were_a_choice(compiled, name):
    """Defaults: one method (SimCLR) and one pretraining seed, so the default run and ``make demo``
    train what they trained before the two loops; the demo's flags default to the same."""
    from pipelines.demo import parse_args

    spec, _ = load(compiled[name])
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["methods"]["defaultValue"] == ["simclr"] and params["pretrain_seeds"]["defaultValue"] == [0]
    assert "pretrain_seed" not in params
    args = parse_args([])
    assert (args.methods, args.pretrain_seeds) == (["simclr"], [0])
    assert parse_args(["--methods", "vicreg,simclr", "--pretrain-seeds", "1,0"]).methods == ["vicreg", "simclr"]


def test_the_demo_table_splits_simulation_from_ingest_and_accounts_for_the_total():
    from pipelines.demo import step_times, table

    spans, t = [], 0.0
    for name, seconds in [("run-folder", 0.1), ("plan", 0.2), ("plan-pretraining", 0.1), ("ingest", 110.0),
                          ("pretrain", 300.0), ("match-encoders", 0.1)]:
        spans.append((name, t, t + seconds))
        t += seconds + 1.0  # a second of kfp.local between steps
    # two iterations at once: train 50 s and 40 s side by side, then their evaluations
    spans += [("train", t, t + 50), ("train", t, t + 40), ("evaluate", t + 40, t + 46), ("evaluate", t + 50, t + 55)]
    spans.append(("report", t + 56, t + 66))
    total = t + 66 + 0.5
    log = "    [KFP Executor ...]: simulated 3000 jets from 24064 events in 105.8 s: 28.4 jets/s on 2 workers\n"
    times = step_times(spans, log, total=total)
    assert times == {"simulate": 105.8, "ingest": 4.2, "pretrain": [300.0], "train": 50.0, "evaluate": 11.0,
                     "report": 10.0, "plan": 0.5, "orchestration": 7.5, "total": round(total, 1),
                     "each": {"train": [50.0, 40.0], "evaluate": [6.0, 5.0]}}
    lines = table(times)
    assert [line.split()[0] for line in lines[:-1]] == ["step", "simulate", "ingest", "pretrain", "train",
                                                        "evaluate", "report", "plan", "orchestration", "total"]
    assert "pretrain #1" in lines[3] and lines[4].split()[:3] == ["train", "(x2)", "50.0"]
    # a cached simulation logs no Pythia time: the whole step is ingest
    assert step_times([("ingest", 0.0, 3.0)], "simulation taken from the cache", 3.0)["simulate"] == 0.0


def test_the_demo_headline_difference_and_its_standard_error():
    import statistics

    from pipelines.demo import difference

    auc = {"finetune": [0.74, 0.73, 0.76], "scratch": [0.67, 0.65, 0.70]}
    results = [{"task": "cls", "mode": m, "label_fraction": 0.1, "scalars": {"roc_auc": v}}
               for m, vs in auc.items() for v in vs]
    results += [{"task": "cls", "mode": "scratch", "label_fraction": 0.5, "scalars": {"roc_auc": 0.1}},
                {"task": "reg", "mode": "scratch", "label_fraction": 0.1, "scalars": {"mae": 3.0}}]
    got = difference(results, 0.1)
    se = (statistics.variance(auc["finetune"]) / 3 + statistics.variance(auc["scratch"]) / 3) ** 0.5
    diff = statistics.mean(auc["finetune"]) - statistics.mean(auc["scratch"])
    assert got["difference"] == pytest.approx(diff, abs=1e-4) and got["se"] == pytest.approx(se, abs=1e-4)
    assert got["n"] == {"finetune": 3, "scratch": 3} and got["sigmas"] == round(diff / se, 1)
    assert difference(results, 0.5) is None  # one result a side has no spread


def test_step_times_are_read_from_kfp_locals_task_log_lines():
    """kfp 2.17.3, ``kfp/local/task_dispatcher.py`` (``run_single_task_implementation``) logs
    ``Executing task '<name>'`` and ``Task '<name>' finished with status ...`` (names in ANSI colour)
    on the root logger, for single tasks only; a loop's two iterations at once
    (``kfp/local/orchestrator/enhanced_dag_orchestrator.py``, ``ParallelExecutor``) overlap."""
    import logging

    from pipelines.local import StepTimes, _listening

    steps: list = []
    handler = StepTimes(steps)
    for t, msg in [(0.0, "Executing task \x1b[96m'ingest'\x1b[0m"), (4.0, "Task \x1b[96m'ingest'\x1b[0m finished "
                   "with status \x1b[92mSUCCESS\x1b[0m"), (5.0, "Executing task 'train'"),
                   (5.5, "Executing task 'train'"), (7.5, "Task 'train' finished with status SUCCESS"),
                   (8.0, "Task 'train' finished with status SUCCESS"), (9.0, "Streamed logs:")]:
        assert handler.filter(logging.makeLogRecord({"msg": msg, "created": t, "levelno": logging.INFO}))
    assert steps == [("ingest", 0.0, 4.0), ("train", 5.0, 7.5), ("train", 5.5, 8.0)]
    # on the root logger it still hears kfp.local, which clears the root's handlers around each task
    # (kfp/local/logging_utils.py, local_logger_context) but not its filters
    root, heard = logging.getLogger(), []
    level, handlers = root.level, root.handlers[:]
    try:
        with _listening(StepTimes(heard)):
            root.setLevel(logging.INFO)
            root.handlers.clear()
            logging.info("Executing task 'report'")
            logging.info("Task 'report' finished with status SUCCESS")
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
    assert [name for name, _, _ in heard] == ["report"]


@pytest.mark.parametrize("name", ["jet_ssl.yaml", "jet_ssl_cpu.yaml"])
def test_each_method_is_tuned_before_its_pretrainings_and_only_when_asked(compiled, name):
    """The KFP SDK 2.17 compiler refuses a dependency on a task inside a ``dsl.If`` from outside it and allows
    ``.after`` a task inside a ``dsl.ParallelFor`` (kfp/compiler/compiler_utils.py, ``get_dependencies``): so
    the loop over ``methods`` holds the condition and the pretraining loop depends on that loop. A 2.17.0
    backend runs a condition's DAG only ``when`` its driver's condition is not false
    (backend/src/v2/compiler/argocompiler/dag.go, ``task``) and kfp.local skips it
    (kfp/local/orchestrator/enhanced_dag_orchestrator.py, ``run_enhanced_dag``): with ``tune_trials`` 0, the
    default, no tune task runs and the pretrainings run their method's own recipe."""
    spec, _ = load(compiled[name])
    root = spec["root"]["dag"]["tasks"]
    loops = {t["taskInfo"]["name"]: n for n, t in root.items() if "parameterIterator" in t}
    tune_loop, pretrain_loop = loops[NAMES["tune-loop"]], loops[NAMES["pretrain-loop"]]
    assert tune_loop in root[pretrain_loop]["dependentTasks"]
    assert root[tune_loop]["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--methods"}
    (cond,) = spec["components"][root[tune_loop]["componentRef"]["name"]]["dag"]["tasks"].values()
    assert cond["triggerPolicy"]["condition"] == "int(inputs.parameter_values['pipelinechannel--tune_trials']) > 0"
    (tuned,) = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"].values()
    assert tuned["componentRef"]["name"] == "comp-tune"
    assert tuned["inputs"]["parameters"]["method"] == {"componentInputParameter": "pipelinechannel--methods-loop-item"}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["tune_trials"]["defaultValue"] == 0 and params["tune_epochs"]["defaultValue"] == 0
    # the pretraining takes the search's settings: 0 runs the method's recipe, and a longer search is a new cache key
    pre = tasks(spec)["pretrain"]["inputs"]["parameters"]
    assert pre["tune_trials"] == {"componentInputParameter": "pipelinechannel--tune_trials"}
    assert pre["tune_epochs"] == {"componentInputParameter": "pipelinechannel--tune_epochs"}


@pytest.mark.slow
def test_a_tuned_run_pretrains_each_method_with_the_recipe_its_search_found(toy, two_runs):
    """Run ``b`` (``tune_trials=1``, ``tune_epochs=1``): each method's tune step leaves ``tune/<method>/recipe.json``
    and ``trials.json`` in the run folder, and its pretraining runs those values (its run.json) on the preset's
    own schedule; run ``a`` (the default, 0) runs no tune task and pretrains with the method's own recipe."""
    from jetlib.pretrain import make_config
    from jetlib.study import pretrain_dir
    from jetlib.tune.recipe import read_recipe

    first, second = two_runs
    run = toy / "store" / "runs" / "b"
    for method in ("simclr", "vicreg"):
        recipe = read_recipe(str(run / "tune" / method / "recipe.json"))
        (trial,) = json.loads((run / "tune" / method / "trials.json").read_text())
        assert (recipe["method"], recipe["preset"], recipe["fixed"]) == (method, "tiny", {"epochs": 1})
        assert trial["state"] == "complete" and trial["value"] == recipe["objective"]["value"]
        assert set(trial["params"]) >= {"lr", "weight_decay"} and list(trial["epochs"]) == ["0"]
        pre = json.loads(Path(pretrain_dir(str(run), 1, method), "run.json").read_text())
        tuned = recipe["values"]
        assert (pre["config"]["lr"], pre["config"]["weight_decay"]) == (tuned["lr"], tuned["weight_decay"])
        assert tuned["method_params"] and all(pre["method"]["params"][k] == v
                                              for k, v in tuned["method_params"].items())
        assert pre["config"]["epochs"] == make_config("tiny").epochs  # the trials' length is not the pretraining's
    encoders = [json.loads(p.read_text())["artifacts"]["encoder"]["artifacts"][0]["metadata"]
                for p in second.rglob("pretrain/executor_output.json")]
    assert sorted(e["recipe"] for e in encoders) == [str(run / "tune" / m / "recipe.json")
                                                     for m in ("simclr", "vicreg")]
    # the report found both searches where the tune steps left them
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert {m: summary[f"tune_{m}_knn_accuracy"] for m in ("simclr", "vicreg")} == {
        m: read_recipe(str(run / "tune" / m / "recipe.json"))["objective"]["value"] for m in ("simclr", "vicreg")}
    # the default run: no tune task, no tune folder, the method's own recipe
    assert not list(first.rglob("tune/executor_output.json")) and not (toy / "store" / "runs" / "a" / "tune").exists()
    own = make_config("tiny", method="simclr")
    pre = json.loads(Path(pretrain_dir(str(toy / "store" / "runs" / "a"), 0, "simclr"), "run.json").read_text())
    assert (pre["config"]["lr"], pre["config"]["weight_decay"]) == (own.lr, own.weight_decay)
    assert pre["method"]["params"]["learn_temperature"] is True
