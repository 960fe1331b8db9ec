"""The search on a cluster: a Katib Experiment built by the kubeflow SDK 0.5.0's OptimizerClient, admitted by the
API-server double as Katib v0.19.0's webhooks admit it (tests/katib_rules.py), and its trial's own script run
here, its output read as Katib's StdOut metrics collector reads it."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from jetlib.errors import ConfigError
from jetlib.tune import katib
from tests import katib_rules
from tests.k8s_double import FakeKubernetes
from tests.test_methods import dataset  # noqa: F401  (the module-scoped 24x24 labelled dataset)

ROOT = Path(__file__).resolve().parents[1]
# pkg/metricscollector/v1beta1/common/const.go (v0.19.0), DefaultFilter
DEFAULT_FILTER = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")


class KatibKubernetes(FakeKubernetes):
    """The double with Katib's Experiment webhooks: defaults, then the validator (tests/katib_rules.py)."""

    def _admit(self, plural, ns, body):
        if plural != "experiments":
            return super()._admit(plural, ns, body)
        exp, errors = katib_rules.admit_experiment(body)
        body.clear()
        body.update(exp)  # what the API server stores is the mutated object
        return (katib_rules.EXPERIMENT_WEBHOOK, katib_rules.aggregate(errors)) if errors else None


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with KatibKubernetes() as fake:
        cfg = client.Configuration()
        config.load_kube_config(config_file=fake.kubeconfig(tmp_path / "kubeconfig"), client_configuration=cfg)
        yield fake, cfg


def collect(log: str, metrics: list[str]) -> list[tuple[str, str]]:
    """pkg/metricscollector/v1beta1/file-metricscollector/file-metricscollector.go (v0.19.0),
    parseLogsInTextFormat: lines naming a metric, every DefaultFilter match whose name is one."""
    found = []
    for line in log.split("\n"):
        if not any(m in line for m in metrics):
            continue
        for name, value, *_ in DEFAULT_FILTER.findall(line):
            if name.strip() in metrics:
                found.append((name.strip(), value.strip()))
    return found


def _submit(cfg, **kw):
    args = {"image": "jetlib:0.1.0", "preset": "tiny", "sets": {"epochs": 2, "max_steps_per_epoch": 2},
            "namespace": "ml", "configuration": cfg, **kw}
    return katib.submit("s3://bucket/data", "s3://bucket/tune", "vicreg", 4, **args)


def test_submit_creates_an_experiment_katib_admits_with_trainjob_trials(cluster):
    """validator.go ValidateExperiment admits it after experiment_defaults.go SetDefault: a TrainJob trial on
    jetlib's runtime, every searched parameter substituted into its command, the objective maximised."""
    fake, cfg = cluster
    name = _submit(cfg, parallel=2, seed=7)
    assert fake.denied == []
    exp = fake.jobs("experiments")[name]
    spec = exp["spec"]
    assert (spec["maxTrialCount"], spec["parallelTrialCount"], spec["maxFailedTrialCount"]) == (4, 2, 4)
    assert spec["objective"]["objectiveMetricName"] == "knn_accuracy" and spec["objective"]["type"] == "maximize"
    assert spec["algorithm"] == {"algorithmName": "random", "algorithmSettings": [{"name": "random_state",
                                                                                   "value": "7"}]}
    assert {p["name"] for p in spec["parameters"]} == {"lr", "weight_decay", "sim_weight", "var_weight"}
    lr = next(p for p in spec["parameters"] if p["name"] == "lr")
    assert lr["feasibleSpace"]["distribution"] == "logUniform" and float(lr["feasibleSpace"]["max"]) == 3.0
    trial = spec["trialTemplate"]["trialSpec"]
    assert (trial["kind"], trial["spec"]["runtimeRef"]) == ("TrainJob", {"kind": "TrainingRuntime",
                                                                         "name": "jetlib-torch"})
    script = trial["spec"]["trainer"]["command"][-1]
    for p in spec["parameters"]:
        assert f"'{p['name']}': '${{trialParameters.{p['name']}}}'" in script
    # defaulted by Katib's mutating webhook: the StdOut collector and TrainJob's conditions
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "StdOut"}}
    assert spec["trialTemplate"]["successCondition"] == katib_rules.TRAINJOB_SUCCESS


def _trial_script(exp: dict, values: dict, data: str, out: Path) -> str:
    """The Python the trial's pod runs: the command's heredoc, with Katib's substitution of the trial's values
    (pkg/controller.v1beta1/experiment/manifest/generator.go, applyParameters: strings.Replace of
    ${trialParameters.NAME}) and the store URIs pointed at local folders."""
    command = exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["trainer"]["command"][-1]
    script = command.split("<< EOM\n", 1)[1].split("\nEOM\n", 1)[0]
    for name, value in values.items():
        script = script.replace(f"${{trialParameters.{name}}}", str(value))
    assert "${" not in script
    return script.replace("s3://bucket/data", data).replace("s3://bucket/tune", str(out))


@pytest.mark.slow  # a real jetlib pretrain in a child process: ~17 s
def test_the_trials_script_runs_jetlib_pretrain_and_prints_what_the_collector_reads(cluster, dataset, tmp_path):  # noqa: F811
    fake, cfg = cluster
    name = _submit(cfg)
    exp = fake.jobs("experiments")[name]
    values = {"lr": 0.25, "weight_decay": 2e-4, "sim_weight": 20.0, "var_weight": 30.0}
    (tmp_path / "katib.py").write_text(_trial_script(exp, values, dataset, tmp_path / "tune"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": "1"}
    r = subprocess.run([sys.executable, "katib.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    runs = list((tmp_path / "tune" / "trials").glob("*/run.json"))
    assert len(runs) == 1
    run = json.loads(runs[0].read_text())
    assert (run["config"]["lr"], run["config"]["weight_decay"]) == (0.25, 2e-4)
    assert run["method"]["params"]["sim_weight"] == 20.0 and run["world_size"] == 1
    # Katib reads one value, the final encoder's validation k-NN accuracy (max of one = it)
    seen = collect(r.stdout + r.stderr, ["knn_accuracy"])
    assert seen == [("knn_accuracy", f"{run['final']['knn_accuracy']:.6g}")]
    # a second rank of torchrun has nothing to do
    other = subprocess.run([sys.executable, "katib.py"], cwd=tmp_path, env={**env, "RANK": "1"},
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 0 and collect(other.stdout, ["knn_accuracy"]) == []


def _denied(fn) -> str:
    with pytest.raises(RuntimeError) as err:
        fn()
    cause = err.value.__cause__
    assert cause.status == 403, cause
    return json.loads(cause.body)["message"]


def test_the_double_refuses_what_katibs_validator_refuses(cluster):
    """validator.go (v0.19.0) ValidateExperiment: parallelTrialCount above maxTrialCount; validateAlgorithm: an
    algorithm katib-config.yaml has no suggestion for; validateTrialTemplate: a ${trialParameters.x} in the
    template with no trialParameters entry. The 403 names the webhook, as the API server does."""
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.optimizer import OptimizerClient, Search, TrialConfig
    from kubeflow.optimizer.types.algorithm_types import BaseAlgorithm, algorithm_to_katib_spec

    fake, cfg = cluster
    sdk = OptimizerClient(KubernetesBackendConfig(namespace="ml", client_configuration=cfg))
    template = katib.experiment_template("s3://b/d", "s3://b/t", "byol", "tiny", {}, "jetlib:0.1.0")
    space = {"lr": Search.loguniform(0.1, 1.0)}
    msg = _denied(lambda: sdk.optimize(template, search_space=space,
                                       trial_config=TrialConfig(num_trials=2, parallel_trials=3)))
    assert msg == (f'admission webhook "{katib_rules.EXPERIMENT_WEBHOOK}" denied the request: '
                   "spec.parallelTrialCount: Invalid value: 3: should be less than or equal to spec.maxTrialCount")

    @dataclasses.dataclass
    class Hyper(BaseAlgorithm):  # an algorithm name no Katib suggestion serves
        algorithm_name = "hyperopt"

        def _to_katib_spec(self):
            return algorithm_to_katib_spec(self)

    msg = _denied(lambda: sdk.optimize(template, search_space=space, algorithm=Hyper()))
    assert "spec.algorithm.algorithmName: Invalid value: \"hyperopt\": unable to get Suggestion config" in msg
    template.trainer.func_args["extra"] = "${trialParameters.momentum}"
    msg = _denied(lambda: sdk.optimize(template, search_space=space))
    assert "parameters: [${trialParameters.momentum}] in spec.trialTemplate not found in spec.trialParameters" in msg
    assert len(fake.jobs("experiments")) == 0


def test_katib_rules_defaults_and_name_rule():
    """experiment_defaults.go SetDefault: parallelTrialCount 3 when unset, which the validator then holds
    against maxTrialCount; validator.go: a name over 40 characters."""
    base = {"metadata": {"name": "a" * 41}, "spec": {
        "maxTrialCount": 2, "objective": {"type": "maximize", "objectiveMetricName": "m"},
        "algorithm": {"algorithmName": "random"},
        "parameters": [{"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "1"}}],
        "trialTemplate": {"primaryContainerName": "node", "trialParameters": [{"name": "lr", "reference": "lr"}],
                          "trialSpec": {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
                                        "spec": {"x": "${trialParameters.lr}"}}}}}
    exp, errors = katib_rules.admit_experiment(base)
    assert exp["spec"]["parallelTrialCount"] == 3 and exp["spec"]["resumePolicy"] == "Never"
    assert exp["spec"]["objective"]["metricStrategies"] == [{"name": "m", "value": "max"}]
    assert [e.split(":")[0] for e in errors] == ["metadata.name", "spec.parallelTrialCount"]


def test_submit_refuses_a_local_out_and_too_many_parallel_trials(cluster):
    _, cfg = cluster
    with pytest.raises(ConfigError, match="s3://"):
        katib.submit("s3://b/d", "runs/tune", "byol", 2, image="jetlib:0.1.0", configuration=cfg)
    with pytest.raises(ConfigError, match="1..2"):
        katib.submit("s3://b/d", "s3://b/t", "byol", 2, image="jetlib:0.1.0", parallel=3, configuration=cfg)


@pytest.mark.slow  # the CLI in a child process against the double: ~17 s
def test_jetlib_tune_backend_katib_submits_through_the_cli(cluster, tmp_path):
    from tests.conftest import run_cli

    fake, _ = cluster
    kubeconfig = fake.kubeconfig(tmp_path / "kc")
    r = run_cli("tune", "--backend", "katib", "--image", "jetlib:0.1.0", "--data", "s3://b/d", "--out", "s3://b/t",
                "--method", "simclr", "--trials", "3", "--parallel", "3", "--preset", "tiny",
                env={"KUBECONFIG": kubeconfig})
    assert r.returncode == 0, r.stderr
    name = json.loads(r.stdout)["experiment"]
    spec = fake.jobs("experiments")[name]["spec"]
    assert spec["parallelTrialCount"] == 3 and {p["name"] for p in spec["parameters"]} == {
        "lr", "weight_decay", "temperature"}
    r = run_cli("tune", "--backend", "katib", "--data", "s3://b/d", "--out", "s3://b/t", "--method", "simclr",
                "--trials", "3", env={"KUBECONFIG": kubeconfig})
    assert r.returncode == 2 and "--image" in r.stderr


@pytest.mark.slow  # the CLI in a child process: ~11 s
def test_a_refused_experiment_is_one_line_naming_katibs_reason(cluster, tmp_path):
    """The SDK's RuntimeError over the API server's 403: said in one line with the webhook's message, exit 2."""
    from tests.conftest import run_cli

    fake, _ = cluster
    fake.forbid.add(("POST", "experiments"))  # RBAC: no create on experiments.kubeflow.org
    kubeconfig = fake.kubeconfig(tmp_path / "k")
    r = run_cli("tune", "--backend", "katib", "--image", "jetlib:0.1.0", "--data", "s3://b/d", "--out", "s3://b/t",
                "--method", "byol", "--trials", "2", "--preset", "tiny", env={"KUBECONFIG": kubeconfig})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "Failed to create OptimizationJob" in r.stderr and "(403)" in r.stderr and "forbidden" in r.stderr.lower()


def _controller(fake, results: list[str | None], api) -> threading.Thread:
    """Katib's controllers for the next Experiment submitted: one Trial per entry of ``results`` (its value, or
    None for a failed trial), each trial's TrainJob created through the API server (the Trainer's webhook
    admits it), then the Experiment's status as the controller updates it (tests/katib_rules.py)."""
    def run():
        while not fake.jobs("experiments"):
            time.sleep(0.05)
        (name, exp), = fake.jobs("experiments").items()
        space = {p["name"]: p["feasibleSpace"] for p in exp["spec"]["parameters"]}
        trials = []
        for i, value in enumerate(results):
            # a suggestion inside the feasible space: the low end moved a step towards the high one per trial
            values = {k: str(float(s["min"]) + (i + 1) * (float(s["max"]) - float(s["min"])) / 10)
                      for k, s in space.items()}
            t, job = katib_rules.trial(exp, f"{name}-{i}", values, value)
            api.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", "ml", "trainjobs", job)
            with fake.lock:
                fake.objects[("trials", "ml", t["metadata"]["name"])] = t
            trials.append(t)
        with fake.lock:
            katib_rules.update_status(fake.objects[("experiments", "ml", name)], trials)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _granted() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every rule in jetlib's Role, manifests/base/rbac/role.yaml."""
    import yaml

    role = yaml.safe_load((ROOT / "manifests" / "base" / "rbac" / "role.yaml").read_text())
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def _verb(method: str, path: str) -> tuple[str, str, str]:
    """A request as the apiserver's RBAC authorizer names it (k8s.io/apiserver endpoints/request/requestinfo.go,
    ``NewRequestInfo``: GET of a name is get, of a collection list; POST create; DELETE delete)."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    assert rest[0] == "namespaces", path  # jetlib asks for nothing cluster-wide
    resource, name = rest[2], rest[3] if len(rest) > 3 else None
    if len(rest) > 4:
        resource = f"{resource}/{rest[4]}"
    verb = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}.get(method)
    return group, resource, verb or ("get" if name else "list")


@pytest.mark.s3
def test_the_tune_step_on_a_cluster_waits_for_katib_and_writes_the_best_trials_recipe(cluster, s3_env, monkeypatch):
    """In a pod (``KUBERNETES_SERVICE_HOST`` set) the pipeline's tune step submits the Experiment once, waits
    for it as the kubeflow SDK 0.5.0 does (``OptimizerClient.wait_for_job_status``: Katib's ``Succeeded``
    condition) and reads ``status.currentOptimalTrial`` (``get_best_results``; Katib v0.19.0
    ``status_util.go``, ``updateTrialsSummary``) into ``recipe.json`` and every Trial (listed by its experiment
    label) into ``trials.json``; a re-run waits on the same Experiment instead of submitting another."""
    from jetlib.data.store import open_store
    from jetlib.tune.step import tune_dir, tune_step
    from jetlib.tune.study import _key, settings

    fake, cfg = cluster
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    api = client.CustomObjectsApi(client.ApiClient(cfg))
    run, data = f"{s3_env}/runs/r", f"{s3_env}/datasets/d"
    controller = _controller(fake, ["0.61", None, "0.74"], api)
    kw = {"preset": "tiny", "epochs": 1, "seed": 3, "image": "jetlib:0.1.0", "parallel": 2, "namespace": "ml",
          "configuration": cfg, "poll_s": 1}
    recipe = tune_step(data, run, "byol", 3, **kw)
    controller.join(5)
    assert fake.denied == [] and fake.calls("POST", "experiments") == 1
    (name, exp), = fake.jobs("experiments").items()
    assert exp["spec"]["parallelTrialCount"] == 2 and exp["spec"]["maxTrialCount"] == 3
    store = open_store(tune_dir(run, "byol"))
    rows = json.loads(store.get_bytes("trials.json"))
    assert [(r["number"], r["state"], r["value"]) for r in rows] == [(0, "complete", 0.61), (1, "fail", None),
                                                                      (2, "complete", 0.74)]
    best = rows[2]["params"]
    assert set(best) == {"lr", "weight_decay", "base_momentum"}
    assert json.loads(store.get_bytes("recipe.json")) == recipe
    assert recipe["values"] == settings("byol", best) and recipe["objective"]["value"] == 0.74
    assert recipe["study"] == {"name": name, "trials": 3, "best_trial": 2,
                               "run": f"{tune_dir(run, 'byol')}/trials/{_key('byol', recipe['values'])}"}
    assert (recipe["preset"], recipe["fixed"]) == ("tiny", {"epochs": 1})
    assert json.loads(store.get_bytes("experiment.json")) == {"name": name, "namespace": "ml"}
    # a re-run of the step (a retry, or the run re-submitted) finds the Experiment and submits none
    assert tune_step(data, run, "byol", 3, **kw) == recipe and fake.calls("POST", "experiments") == 1
    # every request the step made is one manifests/base/rbac grants the pipeline-runner (the controller
    # thread's own TrainJob creations aside): a cluster with jetlib's Role admits the whole search. The one
    # exception is the Trainer SDK's version probe, a read of kubeflow-system's kubeflow-trainer-public ConfigMap
    # (kubeflow/trainer/backends/kubernetes/backend.py, ``verify_backend``: outside the Role's namespace, and a
    # refusal is a warning there, never an error)
    made = {_verb(m, path) for m, path in fake.requests if (m, path.rsplit("/", 1)[-1]) != ("POST", "trainjobs")
            and "/configmaps/kubeflow-trainer-public" not in path}
    assert made and made <= _granted(), made - _granted()


@pytest.mark.s3
def test_the_tune_step_fails_in_one_line_and_writes_no_recipe_when_every_katib_trial_failed(cluster, s3_env,
                                                                                             monkeypatch):
    """Every trial failed: Katib marks the Experiment Failed (``maxFailedTrialCount``, which ``submit`` sets to
    the trials, reached); the step says so in one line (exit 4) and leaves no recipe a pretraining could read."""
    from jetlib.data.store import open_store
    from jetlib.errors import TrainingError
    from jetlib.tune.step import tune_dir, tune_step

    fake, cfg = cluster
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    controller = _controller(fake, [None, None], client.CustomObjectsApi(client.ApiClient(cfg)))
    with pytest.raises(TrainingError, match="ended failed with no successful trial: kubectl describe experiment"):
        tune_step(f"{s3_env}/d", f"{s3_env}/runs/r", "simclr", 2, preset="tiny", image="jetlib:0.1.0",
                  namespace="ml", configuration=cfg, poll_s=1)
    controller.join(5)
    assert not open_store(tune_dir(f"{s3_env}/runs/r", "simclr")).exists("recipe.json")


def test_the_tune_step_refuses_bad_settings_before_any_work(tmp_path, monkeypatch):
    """A negative ``tune_epochs``, or a cluster run without the trials' image: one line (exit 2), nothing written."""
    from jetlib.tune.step import tune_step

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="tune_epochs must be 0"):
        tune_step("d", str(tmp_path / "run"), "simclr", 1, preset="tiny", epochs=-1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    with pytest.raises(ConfigError, match="needs image"):
        tune_step("s3://b/d", str(tmp_path / "run"), "simclr", 1, preset="tiny")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
