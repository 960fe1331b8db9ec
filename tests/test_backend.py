"""The compiled pipeline read as a KFP 2.17.0 backend reads it: what kfp.local never checks.

Each test walks the committed YAML (the IR a user submits) and encodes one behaviour of the
backend's driver, launcher or UI, named with its file and function in kubeflow/pipelines at tag
2.17.0, so that the next reader can check it there.
"""

import itertools
import json
import re
from pathlib import Path

import pytest
import yaml

from components.pod_size import pretrain_size
from jetlib import tasks
from jetlib.cluster import UID
from jetlib.errors import ConfigError
from jetlib.kfp_outputs import TRAINING_KEY, flat_metadata, result_metrics, training_name
from jetlib.methods import METHODS
from jetlib.study import MODES, PRETRAINED, plan, pretrain_dir, pretrainings
from pipelines.jet_ssl import NAMES, PARALLELISM, PRETRAIN_PARALLELISM, REQUESTS, SHM, TUNE_METHODS_PARALLELISM
from pipelines.pin import PinError, pin, pinned_reference
from tests.pod_security import kfp_task_pod, restricted_violations

ROOT = Path(__file__).resolve().parents[1]
YAMLS = ["jet_ssl.yaml", "jet_ssl_cpu.yaml"]
CHANNEL = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")


def load(name: str) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all((ROOT / "pipelines" / name).read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def dags(spec: dict):
    """(component name, dag) of the root and of every loop body."""
    yield "root", spec["root"]
    for name, comp in spec["components"].items():
        if "dag" in comp:
            yield name, comp


def executor_tasks(spec: dict):
    """(dag component, task) for every task that runs a container, loops' bodies included."""
    for dag_name, comp in dags(spec):
        for task in comp["dag"]["tasks"].values():
            executor = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            if executor:
                yield dag_name, comp, task, executor


def parameter_type(spec: dict, dag: dict, task: dict, channel: str) -> str:
    """The type of the value the driver finds for ``channel`` in this task's executor input."""
    source = task["inputs"]["parameters"][channel]
    if "taskOutputParameter" in source:
        ref = source["taskOutputParameter"]
        producer = dag["dag"]["tasks"][ref["producerTask"]]
        comp = spec["components"][producer["componentRef"]["name"]]
        return comp["outputDefinitions"]["parameters"][ref["outputParameterKey"]]["parameterType"]
    if "componentInputParameter" in source:
        return dag["inputDefinitions"]["parameters"][source["componentInputParameter"]]["parameterType"]
    raise AssertionError(f"{channel}: a constant channel, the driver would read it as is")


@pytest.mark.parametrize("name", YAMLS)
def test_every_accelerator_count_is_a_string_the_driver_can_read(name):
    """kubeflow/pipelines 2.17.0, backend/src/v2/driver/driver.go, ``initPodSpecPatch``: the accelerator
    count goes through ``resolvePodSpecInputRuntimeParameter`` (backend/src/v2/driver/resolve.go),
    which returns ``GetStringValue()`` of the channel's value: empty for a number, and an empty count
    sets no ``nvidia.com/gpu`` limit at all. So a count is a digit constant or a STRING-typed value."""
    spec, _ = load(name)
    counts = {}
    for _, dag, task, executor in executor_tasks(spec):
        accelerator = spec["deploymentSpec"]["executors"][executor]["container"].get("resources", {}).get(
            "accelerator")
        if not accelerator:
            continue
        count = accelerator["resourceCount"]
        match = CHANNEL.fullmatch(count)
        if match:
            assert parameter_type(spec, dag, task, match.group(1)) == "STRING", (executor, count)
        else:
            assert re.fullmatch(r"\d+", count), (executor, count)
        counts[executor] = count
    if name == "jet_ssl.yaml":
        assert counts == {"exec-pretrain": "{{$.inputs.parameters['pipelinechannel--pretrain-gpus-Output']}}",
                          "exec-train": "1"}
    else:
        assert counts == {}
    gpus = spec["root"]["inputDefinitions"]["parameters"]["gpus_per_node"]
    assert gpus["defaultValue"] == (1 if name == "jet_ssl.yaml" else 0)  # the CPU pipeline asks for none


def loops(spec: dict):
    """(dag, loop task name, loop task) for every ParallelFor."""
    for _, dag in dags(spec):
        for task_name, task in dag["dag"]["tasks"].items():
            if "parameterIterator" in task or "artifactIterator" in task:
                yield dag, task_name, task


@pytest.mark.parametrize("name", YAMLS)
def test_no_fan_in_can_be_empty_for_any_accepted_modes(name):
    """kubeflow/pipelines 2.17.0, backend/src/v2/driver/resolve.go, ``resolveUpstreamArtifacts``: an
    input collected from a loop (``dsl.Collected``) is gathered only when the loop ran
    (``iterations > 0``); with zero iterations the driver looks for a producer task that never ran,
    and the consumer fails. So every loop whose outputs are collected must iterate over a list a
    step computed (``plan``'s, or ``match_encoders``' which keeps ``plan``'s length), and ``plan``
    must never return an empty list for arguments it accepts: it is run here on every non-empty
    subset of MODES, of the methods and of a few pretraining seeds (and refuses the empty ones). The one
    loop over a run parameter, ``methods`` (each method's tune step, when ``tune_trials`` > 0, its one
    ``dsl.If``), is collected by nothing: the pretraining loop only runs after it."""
    spec, _ = load(name)
    loop_names = {task_name for _, task_name, _ in loops(spec)}
    fan_ins = []
    for _, dag in dags(spec):
        for consumer, task in dag["dag"]["tasks"].items():
            if "condition" in task.get("triggerPolicy", {}):  # the one dsl.If: tune when tune_trials > 0
                assert task["taskInfo"]["name"] == NAMES["tuning"], consumer
            for kind in ("artifacts", "parameters"):
                for source in task.get("inputs", {}).get(kind, {}).values():
                    ref = source.get("taskOutputArtifact") or source.get("taskOutputParameter") or {}
                    if ref.get("producerTask") in loop_names:
                        fan_ins.append((consumer, ref["producerTask"]))
    # two loops side by side, each collected once: pretrainings by match-encoders, trainings by the report
    assert fan_ins == [("match-encoders", "for-loop-3"), ("report", "for-loop-4")]
    sources = {}
    for dag, task_name, loop in loops(spec):
        assert dag is spec["root"], task_name  # no loop inside a loop: a backend collects none from one
        items = loop["parameterIterator"]["items"]["inputParameter"]
        if task_name == "for-loop-1":  # the tune loop: over the methods, which plan refuses to leave empty
            assert items == "pipelinechannel--methods" and loop["taskInfo"]["name"] == NAMES["tune-loop"]
            continue
        source = loop["inputs"]["parameters"][items]["taskOutputParameter"]  # not a parameter a user sets to []
        sources[task_name] = (source["producerTask"], source["outputParameterKey"])
    assert sources == {"for-loop-3": ("plan-pretraining", "Output"), "for-loop-4": ("match-encoders", "Output")}
    executors = spec["deploymentSpec"]["executors"]
    assert spec["components"]["comp-plan"]["executorLabel"] == "exec-plan"
    assert "from jetlib.study import plan as expand" in str(executors["exec-plan"])
    assert "from jetlib.study import pretrainings, run_dir" in str(executors["exec-plan-pretraining"])
    assert "from jetlib.study import match_encoders as match" in str(executors["exec-match-encoders"])
    for r in range(1, len(MODES) + 1):
        for modes in itertools.combinations(MODES, r):
            pretrained = sum(m.split("-")[1] in PRETRAINED for m in modes)
            assert len(plan([0.1], [0], list(modes))) == len(modes)
            assert len(plan([0.01, 0.1], [0, 1, 2], list(modes))) == 6 * len(modes)
            assert len(plan([0.1], [0], list(modes), ["simclr"], [0, 1])) == len(modes) + pretrained
    for r in range(1, len(METHODS) + 1):
        for methods in itertools.combinations(METHODS, r):
            for pseeds in ([0], [0, 1, 2]):
                assert len(pretrainings(list(methods), pseeds)) == len(methods) * len(pseeds)
    for bad in ([], ["cls-bogus"]):
        with pytest.raises(ConfigError):
            plan([0.1], [0], bad)
    with pytest.raises(ConfigError):
        plan([], [0], ["cls-vgg"])
    with pytest.raises(ConfigError):
        plan([0.1], [], ["cls-vgg"])
    for methods, pseeds in (([], [0]), (["simclr"], []), (["bogus"], [0]), (["simclr", "simclr"], [0])):
        with pytest.raises(ConfigError):
            pretrainings(methods, pseeds)
        with pytest.raises(ConfigError):  # a training grid never outlives a pretraining plan it refused
            plan([0.1], [0], ["cls-vgg"], methods, pseeds)
    # the plans run before anything that costs: ingest waits for them
    assert {"plan", "plan-pretraining"} <= set(spec["root"]["dag"]["tasks"]["ingest"]["dependentTasks"])


@pytest.mark.parametrize("name", YAMLS)
def test_every_task_lists_the_producers_of_its_inputs_as_dependencies(name):
    """A task that reads another task's output (an input, or a CPU/memory/GPU request placeholder) lists
    that task in ``dependentTasks``. KFP 2.17.0's backend adds such edges itself
    (``backend/src/v2/compiler/argocompiler/dag.go``, ``addImplicitDependencies``); kfp.local does not:
    ``kfp/local/graph_utils.py`` ``build_dependency_map`` orders a DAG by ``dependent_tasks`` alone, and
    a pod size read before its producer ran failed the local run ("task 'pretrain-size' not found").
    So the pipeline states every such edge, and both run the tasks in the same order."""
    spec, _ = load(name)
    for dag_name, comp in dags(spec):
        tasks_ = comp["dag"]["tasks"]
        for task_name, task in tasks_.items():
            inputs = task.get("inputs", {})
            producers = {v[kind]["producerTask"] for group in ("parameters", "artifacts")
                         for v in inputs.get(group, {}).values()
                         for kind in ("taskOutputParameter", "taskOutputArtifact") if kind in v}
            producers &= set(tasks_)  # a loop's items come from its parent DAG, resolved by the driver
            missing = producers - set(task.get("dependentTasks", []))
            assert not missing, f"{dag_name}/{task_name} reads {sorted(missing)} without depending on it"


@pytest.mark.parametrize("name", YAMLS)
def test_the_default_run_folder_is_the_runs_id(name):
    """kubeflow/pipelines 2.17.0, backend/src/v2/driver/resolve.go, ``resolveInputParameter``: a constant
    input equal to ``{{$.pipeline_job_uuid}}`` becomes ``opts.RunID`` (``{{workflow.uid}}``,
    backend/src/v2/compiler/argocompiler/argo.go ``runID``), unique per run, while
    ``{{$.pipeline_job_name}}`` becomes the display name (``opts.RunDisplayName``), which two
    submissions share. The match is on the whole string, so the placeholder is the entire constant."""
    spec, _ = load(name)
    for step in ("run-folder", "plan", "plan-pretraining"):
        params = spec["root"]["dag"]["tasks"][step]["inputs"]["parameters"]
        assert params["job_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
        assert params["run_name"] == {"componentInputParameter": "run_name"}
    assert "{{$.pipeline_job_name}}" not in (ROOT / "pipelines" / name).read_text()
    assert spec["root"]["inputDefinitions"]["parameters"]["run_name"]["defaultValue"] == ""


def metrics_outputs(spec: dict) -> list[tuple[str, str, bool]]:
    """(task display name, output key, inside a loop) of every task output typed ``system.Metrics``."""
    out = []
    for dag_name, dag in dags(spec):
        for task in dag["dag"]["tasks"].values():
            comp = spec["components"][task["componentRef"]["name"]]
            for key, art in (comp.get("outputDefinitions") or {}).get("artifacts", {}).items():
                if art["artifactType"]["schemaTitle"] == "system.Metrics" and "executorLabel" in comp:
                    out.append((task["taskInfo"]["name"], key, dag_name != "root"))
    return out


def compare_table(runs: list[list[tuple[str, dict]]]) -> tuple[list[str], dict[str, list[str]]]:
    """kubeflow/pipelines 2.17.0 frontend/src/lib/v2/CompareUtils.ts, ``getScalarTableData``: one column
    per (run, execution, Metrics artifact), labelled ``<execution display name> > <artifact name>``
    (``loadScalarExecutionArtifacts``: getExecutionDisplayName, getArtifactName = the event path's
    output key), one row per custom property, ``display_name`` skipped (``addScalarDataItems``),
    each cell ``JSON.stringify`` of the value, "" where the artifact lacks the property."""
    columns = [label for run in runs for label, _ in run]
    rows: dict[str, list[str]] = {}
    index = 0
    for run in runs:
        for _, props in run:
            for key, value in props.items():
                if key == "display_name":
                    continue
                rows.setdefault(key, [""] * len(columns))[index] = json.dumps(value)
            index += 1
    return columns, rows


def evaluation_properties(item: dict, run: str) -> dict:
    """The custom properties the evaluate step gives its Metrics artifact for one planned training
    (components/evaluate.py: result_metrics, display_name and the training row), on a made-up result."""
    keys = tasks.get(item["problem"]).keys
    result = {"task": item["problem"], "mode": item["mode"], "label_fraction": item["fraction"],
              "seed": item["seed"], "dataset": {"jets": 100}, "scalars": {k: 0.5 for k in keys},
              "resources": {"trainable_parameters": 10, "train_seconds": 1.0}}
    if "method" in item:
        result["origin"] = {"init": pretrain_dir(run, item["pretrain_seed"], item["method"])}
    name = training_name(result)
    return {**flat_metadata(result_metrics(result)), "display_name": name, TRAINING_KEY: name}


@pytest.mark.parametrize("name", YAMLS)
def test_the_compare_page_tells_every_evaluation_apart_and_shows_one_headline_per_run(name):
    """kubeflow/pipelines 2.17.0: an execution's display name is its task's ``taskInfo.name``
    (backend/src/v2/driver/container.go, ``ecfg.DisplayName = opts.Task.GetTaskInfo().GetName()``), the
    same for every iteration of a loop, and frontend/src/lib/v2/CompareUtils.ts labels each scalar
    column ``<execution display name> > <output key>`` and skips the artifact's ``display_name``. So
    every evaluation's column reads ``evaluate > metrics``; the ``training`` row tells them apart (mode
    and method included, which no number row does), and a run's headline is its one
    ``report > summary`` column."""
    spec, _ = load(name)
    outputs = metrics_outputs(spec)
    assert sorted(outputs) == [("evaluate", "metrics", True), ("report", "summary", False)]
    items = plan([0.01, 0.1], [0, 1], list(MODES), ["simclr", "vicreg"], [0])
    runs = []
    for run_id in ("run-a", "run-b"):
        run = [("evaluate > metrics", evaluation_properties(item, run_id)) for item in items]
        run.append(("report > summary", {"display_name": "study summary", "cls_auc_finetune_f0.1_mean": 0.8,
                                          "cls_auc_finetune_vicreg_f0.1_mean": 0.7}))
        runs.append(run)
    columns, rows = compare_table(runs)
    assert set(columns) == {"evaluate > metrics", "report > summary"}  # the labels tell nothing apart
    n = len(items) + 1
    for r in range(2):
        cells = rows[TRAINING_KEY][r * n:r * n + len(items)]
        assert len(set(cells)) == len(items) and "" not in cells  # every evaluation named, each differently
        assert rows[TRAINING_KEY][r * n + len(items)] == ""  # the summary column is not one of them
    names = {json.loads(c) for c in rows[TRAINING_KEY][:len(items)]}
    assert "cls-finetune f0.1 s1 (pretrain-vicreg-s0)" in names and "cls-vgg f0.01 s0" in names
    # without that row the numbers' rows would not tell simclr's from vicreg's fine-tuning apart
    numeric = [tuple(rows[k][i] for k in rows if k != TRAINING_KEY) for i in range(len(items))]
    assert len(set(numeric)) < len(items)
    # the headline: rows filled only in each run's one summary column
    for key in ("cls_auc_finetune_f0.1_mean", "cls_auc_finetune_vicreg_f0.1_mean"):
        assert [i for i, c in enumerate(rows[key]) if c] == [n - 1, 2 * n - 1]


@pytest.mark.parametrize("name", YAMLS)
def test_tasks_have_readable_display_names(name):
    """The task names the run graph and the Compare page's column labels show (``taskInfo.name``)."""
    spec, _ = load(name)
    shown = {t["taskInfo"]["name"] for _, dag in dags(spec) for t in dag["dag"]["tasks"].values()}
    expected = set(NAMES.values()) - ({"pretraining GPUs"} if name == "jet_ssl_cpu.yaml" else set())
    assert shown == expected


@pytest.mark.parametrize("name", YAMLS)
def test_every_task_pod_meets_pod_security_restricted(name):
    """Each task's pod as the 2.17.0 backend renders it (tests/pod_security.py, kfp_task_pod: the
    compiler's backend/src/v2/compiler/argocompiler/security_context.go,
    applySecurityContextToExecutorTemplate, leaves ``runAsNonRoot`` off the user container; the driver,
    backend/src/v2/driver/k8s.go, applies the task's kfp-kubernetes ``securityContext``) meets Pod
    Security "restricted" and runs as the images' user (images/Dockerfile: USER 1000:1000)."""
    spec, k8s = load(name)
    executors = spec["deploymentSpec"]["executors"]
    assert set(k8s) == set(executors)  # every task carries a Kubernetes config
    for label, executor in executors.items():
        assert k8s[label]["securityContext"] == {"runAsUser": str(UID), "runAsGroup": str(UID), "runAsNonRoot": True}
        pod = kfp_task_pod(executor, k8s[label])
        assert restricted_violations(pod) == [], label
        # and what the compiler alone would run: refused
        bare = {k: v for k, v in k8s[label].items() if k != "securityContext"}
        assert restricted_violations(kfp_task_pod(executor, bare)) == ["container main: runAsNonRoot not true"]


@pytest.mark.parametrize("name", YAMLS)
def test_no_task_inside_a_loop_relies_on_a_retry(name):
    """kubeflow/pipelines 2.17.0 drops the retry policy of a task inside a ``dsl.ParallelFor``: the
    compiler's loop (backend/src/v2/compiler/argocompiler/dag.go, ``iterationItemTask``) builds the
    iteration template with no retry strategy, and the ``retry-system-container-executor`` of
    argocompiler/container.go (``addContainerExecutorTemplate``) is chosen only where
    ``task.GetRetryPolicy()`` reaches it (kubeflow/pipelines issues 12389 and 13897, open at 2.17.0).
    So no task in a loop carries one; ingest, outside the loops, keeps its retries, and a failed
    training resumes from its checkpoints when the run is retried (docs/cluster-readings.md)."""
    spec, _ = load(name)
    retried = {(dag_name, task_name) for dag_name, dag in dags(spec)
               for task_name, task in dag["dag"]["tasks"].items() if "retryPolicy" in task}
    assert retried == {("root", "ingest")}
    assert spec["root"]["dag"]["tasks"]["ingest"]["retryPolicy"]["maxRetryCount"] == 2


@pytest.mark.parametrize("name", YAMLS)
def test_the_pretraining_pod_is_sized_at_run_time(name):
    """kubeflow/pipelines 2.17.0, backend/src/v2/driver/driver.go, ``getPodResource``: a
    ``resourceCpuRequest``/``resourceMemoryRequest`` placeholder is resolved from the task's inputs
    (``resolvePodSpecInputRuntimeParameter``, ``GetStringValue()``), so the channels must be strings.
    The pod that only waits for a multi-node job asks for a plan step's CPU and memory."""
    spec, _ = load(name)
    gpu = name == "jet_ssl.yaml"
    body = spec["components"]["comp-for-loop-3"]
    resources = spec["deploymentSpec"]["executors"]["exec-pretrain"]["container"]["resources"]
    for field, output in (("resourceCpuRequest", "cpu"), ("resourceMemoryRequest", "memory")):
        channel = CHANNEL.fullmatch(resources[field]).group(1)
        assert channel == f"pipelinechannel--pretrain-size-{output}"
        assert parameter_type(spec, body, body["dag"]["tasks"]["pretrain"], channel) == "STRING"
    size = {k: v["runtimeValue"]["constant"] for k, v in body["dag"]["tasks"]["pretrain-size"]["inputs"][
        "parameters"].items() if "runtimeValue" in v}
    assert (size["cpu"], size["memory"]) == REQUESTS[gpu]["pretrain"]
    assert (size["waiting_cpu"], size["waiting_memory"]) == REQUESTS[gpu]["plan"]
    fn = pretrain_size.python_func
    assert tuple(fn(nodes=1, **size)) == REQUESTS[gpu]["pretrain"]
    assert tuple(fn(nodes=3, **size)) == REQUESTS[gpu]["plan"]
    with pytest.raises(SystemExit):  # step_errors: one line, exit 2
        fn(nodes=0, **size)


@pytest.mark.parametrize("name", YAMLS)
def test_shm_is_bounded_and_the_loop_is_throttled(name):
    """kubeflow/pipelines 2.17.0, backend/src/v2/compiler/argocompiler/dag.go: the loop's
    ``iteratorPolicy.parallelismLimit`` becomes the Argo template's ``parallelism`` (no limit: every
    iteration's pod at once); kfp-kubernetes' ``emptyDirMounts.sizeLimit`` bounds the memory-backed
    ``/dev/shm``."""
    spec, k8s = load(name)
    gpu = name == "jet_ssl.yaml"
    limits = {task_name: loop["iteratorPolicy"]["parallelismLimit"] for _, task_name, loop in loops(spec)}
    assert limits == {"for-loop-1": TUNE_METHODS_PARALLELISM[gpu], "for-loop-3": PRETRAIN_PARALLELISM[gpu],
                      "for-loop-4": PARALLELISM[gpu]}
    for step in ("pretrain", "train"):
        (mount,) = k8s[f"exec-{step}"]["emptyDirMounts"]
        assert mount["medium"] == "Memory" and mount["sizeLimit"] == SHM[gpu][step]
    if gpu:  # the pod that waits for a multi-node job holds no GPU: pretrain-gpus returns "0" for nodes > 1
        body = spec["components"]["comp-for-loop-3"]["dag"]["tasks"]  # each pretraining computes its own limit
        pretrain = body["pretrain"]["inputs"]["parameters"]
        assert pretrain["pipelinechannel--pretrain-gpus-Output"]["taskOutputParameter"]["producerTask"] == \
            "pretrain-gpus"
        assert body["pretrain-gpus"]["inputs"]["parameters"] == {
            "nodes": {"componentInputParameter": "pipelinechannel--nodes"},
            "gpus_per_node": {"componentInputParameter": "pipelinechannel--gpus_per_node"}}


# --- compile against the built image, pinned by content ----------------------------------------

DIGEST_A, DIGEST_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_a_registry_digest_is_preferred_and_a_local_build_needs_pin_local():
    """The cache key covers the image string: kubeflow/pipelines 2.17.0,
    backend/src/v2/cacheutils/cache.go, ``GenerateCacheKey`` (``ContainerSpec{Image: image, ...}``,
    the compiled ``opts.Container.Image``, backend/src/v2/driver/cache.go). A tag rebuilt with other
    code keeps its string; a digest or a content tag does not."""
    pushed = {"Id": DIGEST_B, "RepoDigests": ["other/jetlib@" + DIGEST_B, "reg.example:5000/jetlib@" + DIGEST_A]}
    assert pinned_reference("reg.example:5000/jetlib:0.1.0", pushed) == "reg.example:5000/jetlib@" + DIGEST_A
    built = {"Id": DIGEST_B, "RepoDigests": []}
    with pytest.raises(PinError, match="no registry digest .* docker push it, or PIN_LOCAL=1"):
        pinned_reference("jetlib:0.1.0", built)
    assert pinned_reference("jetlib:0.1.0", built, local=True) == "jetlib:0.1.0-" + "b" * 12
    rebuilt = {"Id": "sha256:" + "c" * 64, "RepoDigests": []}
    assert pinned_reference("jetlib:0.1.0", rebuilt, local=True) != pinned_reference("jetlib:0.1.0", built, True)
    tagged = []
    refs = pin({"JETLIB_IMAGE": "jetlib:0.1.0"}, local=True, inspect=lambda image: built,
               tag=lambda src, dst: tagged.append((src, dst)))
    assert refs == {"JETLIB_IMAGE": "jetlib:0.1.0-" + "b" * 12} and tagged == [("jetlib:0.1.0", refs["JETLIB_IMAGE"])]


def test_a_pinned_compile_puts_the_digest_in_every_executor(tmp_path):
    from tests.test_pipeline import compile_into

    cpu, cuda = "reg.example/jetlib@" + DIGEST_A, "reg.example/jetlib-cuda@" + DIGEST_B
    text = compile_into(tmp_path, JETLIB_IMAGE=cpu, JETLIB_CUDA_IMAGE=cuda)
    spec, _ = yaml.safe_load_all(text["jet_ssl.yaml"])
    images = {n: e["container"]["image"] for n, e in spec["deploymentSpec"]["executors"].items()}
    assert {images["exec-pretrain"], images["exec-train"]} == {cuda}
    assert {i for n, i in images.items() if n not in ("exec-pretrain", "exec-train")} == {cpu}
    # the committed YAML stays the release's
    assert "@sha256:" not in (ROOT / "pipelines" / "jet_ssl.yaml").read_text()
