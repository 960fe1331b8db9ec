"""The same search on a cluster: a Katib Experiment whose trials are TrainJobs running ``jetlib pretrain``.

Built and submitted through the ``kubeflow`` SDK 0.5.0's ``kubeflow.optimizer.OptimizerClient``
(``OptimizerClient.optimize``): the SDK makes each trial a Kubeflow Trainer ``TrainJob`` on jetlib's
``TrainingRuntime`` (``jetlib-torch``, ``manifests/base/runtime``) from a ``CustomTrainer`` whose
function is :func:`katib_trial`; it passes every searched parameter to that function as
``${trialParameters.<name>}``, which Katib replaces in each trial's TrainJob. The search space is
:func:`jetlib.tune.study.space`'s, as Katib ``double`` parameters (``logUniform`` or ``uniform``).

A trial (:func:`run_trial`, in the trial's pod) writes its settings as a recipe, runs the same
``jetlib pretrain --recipe`` as ``jetlib tune`` does on one machine, into ``OUT/trials/<key>`` on the
store (``key``: a hash of the settings, so a trial Katib re-runs resumes its pretraining), and prints
its objective once, as the last line, in the form Katib's StdOut metrics collector parses
(``knn_accuracy=0.7123``: ``pkg/metricscollector/v1beta1/common/const.go``, ``DefaultFilter``,
``([\\w|-]+)\\s*=\\s*([+-]?\\d*(\\.\\d+)?([Ee][+-]?\\d+)?)``). Once: for a ``maximize`` objective
Katib keeps the *largest* value a trial printed (the mutating webhook's default metric strategy
``max``, ``experiment_defaults.go``, ``setDefaultObjective``), which per-epoch values would make the
best epoch's, not the final encoder's.

The SDK 0.5.0 offers random and grid search (``kubeflow.optimizer.types.algorithm_types``) and no
early-stopping field; :func:`submit` uses random search, seeded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from jetlib.errors import ConfigError, TrainingError

METRIC = "knn_accuracy"
RUNTIME = "jetlib-torch"  # jetlib's namespaced TrainingRuntime (manifests/base/runtime)
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
                 "MASTER_ADDR", "MASTER_PORT", "GROUP_WORLD_SIZE", "ROLE_NAME")


def metric_line(value: float) -> str:
    """The line Katib's StdOut collector reads as the trial's objective."""
    return f"{METRIC}={value:.6g}"


def katib_space(method: str, cfg) -> dict:
    """:func:`jetlib.tune.study.space` as the SDK's ``Search`` parameter specs."""
    from kubeflow.optimizer import Search

    from jetlib.tune.study import space

    return {name: (Search.loguniform if d.log else Search.uniform)(d.low, d.high)
            for name, d in space(method, cfg).items()}


def katib_trial(data: str, out: str, method: str, preset: str, sets: str, **params) -> None:
    """What each trial's pod runs (the SDK ships this function's source): the jetlib image's
    :func:`run_trial`, with the trial's parameters as Katib substituted them (text)."""
    from jetlib.tune.katib import run_trial

    run_trial(data, out, method, preset, sets, params)


def run_trial(data: str, out: str, method: str, preset: str, sets: str, params: dict) -> float:
    """``jetlib pretrain`` with one trial's settings; prints :func:`metric_line` last and returns the value.

    ``sets`` is a JSON object of config values every trial runs with; ``params`` the trial's values as text.
    """
    from jetlib.tune.recipe import recipe_doc
    from jetlib.tune.study import _key, settings

    # The SDK starts the function under torchrun, one process per visible GPU: the first runs the trial
    # alone (one pretraining process, torchrun's variables removed), the others have nothing to do.
    if os.environ.get("RANK", "0") != "0":
        return float("nan")
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS and not k.startswith("TORCHELASTIC_")}
    try:
        values = settings(method, {k: float(v) for k, v in params.items()})
        fixed = json.loads(sets) if sets else {}
    except (TypeError, ValueError) as e:
        raise ConfigError(f"trial parameters {params!r} or sets {sets!r}: {e}") from None
    run = f"{out.rstrip('/')}/trials/{_key(method, values)}"
    with tempfile.TemporaryDirectory() as tmp:
        recipe = os.path.join(tmp, "recipe.json")
        with open(recipe, "w") as f:
            json.dump(recipe_doc(method, values), f)
        cmd = [sys.executable, "-m", "jetlib", "pretrain", "--data", data, "--out", run, "--preset", preset,
               "--method", method, "--recipe", recipe]
        for k, v in fixed.items():
            cmd += ["--set", f"{k}={v}"]
        # stderr (logs) goes to the pod's log as it comes; stdout holds pretrain's one JSON line
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if r.returncode != 0:
        raise TrainingError(f"the trial's jetlib pretrain failed (exit {r.returncode}); its log is above")
    final = json.loads(r.stdout.strip().splitlines()[-1])
    if not isinstance(final.get(METRIC), float):
        raise ConfigError(f"the pretraining recorded no {METRIC}: the dataset needs labels (k-NN on validation)")
    print(metric_line(final[METRIC]), flush=True)
    return final[METRIC]


def experiment_template(data: str, out: str, method: str, preset: str, sets: dict, image: str,
                        runtime: str = RUNTIME):
    """The SDK's ``TrainJobTemplate`` of one trial (one node, the runtime's resources)."""
    from kubeflow.trainer import CustomTrainer, TrainJobTemplate

    args = {"data": data, "out": out, "method": method, "preset": preset, "sets": json.dumps(sets, sort_keys=True)}
    return TrainJobTemplate(runtime=runtime, trainer=CustomTrainer(func=katib_trial, func_args=args, image=image,
                                                                   num_nodes=1))


def submit(data: str, out: str, method: str, trials: int, *, image: str, preset: str = "gpu",
           sets: dict | None = None, parallel: int = 1, seed: int = 0, namespace: str | None = None,
           runtime: str = RUNTIME, configuration=None) -> str:
    """Create the Experiment; returns its name (``kubectl get experiment NAME``; the SDK's ``get_job``).

    ``out`` must be an ``s3://`` URI: the trials run in pods and write their runs there.
    ``configuration``: a ``kubernetes.client.Configuration`` (default: in-cluster or ``$KUBECONFIG``).
    """
    from jetlib import methods
    from jetlib.pretrain import make_config

    if not str(out).startswith("s3://"):
        raise ConfigError(f"--out {str(out)[:200]}: the trials run in pods, so their runs go to the store (s3://)")
    if not 1 <= parallel <= trials:
        raise ConfigError(f"parallel trials {parallel} must lie in 1..{trials} (Katib refuses more than maxTrialCount)")
    methods.get(method)
    cfg = make_config(preset, method=method, **dict(sets or {}))
    from kubernetes.client.exceptions import ApiException

    sdk = client(namespace, configuration)
    try:
        return _optimize(sdk, data, out, method, trials, image, preset, sets, parallel, seed, runtime, cfg)
    except (RuntimeError, TimeoutError) as e:  # the SDK wraps the API server's answer
        cause = e.__cause__
        if isinstance(cause, ApiException):
            try:
                why = json.loads(cause.body).get("message", "")
            except (TypeError, ValueError):
                why = cause.reason
            raise ConfigError(f"{e} ({cause.status}): {str(why)[:500]}") from None
        raise ConfigError(f"{e}: {str(cause)[:300]}") from None


def _optimize(sdk, data, out, method, trials, image, preset, sets, parallel, seed, runtime, cfg) -> str:
    from kubeflow.optimizer import Objective, RandomSearch, TrialConfig

    return sdk.optimize(
        experiment_template(data, out, method, preset, dict(sets or {}), image, runtime),
        trial_config=TrialConfig(num_trials=trials, parallel_trials=parallel, max_failed_trials=trials),
        search_space=katib_space(method, cfg),
        objectives=[Objective(metric=METRIC, direction="maximize")],
        algorithm=RandomSearch(random_state=seed))


def client(namespace: str | None = None, configuration=None):
    """The SDK's ``OptimizerClient`` (in-cluster or kubeconfig unless ``configuration`` is given)."""
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.optimizer import OptimizerClient
    from kubernetes.config import ConfigException

    try:
        return OptimizerClient(KubernetesBackendConfig(namespace=namespace, client_configuration=configuration))
    except ConfigException as e:
        raise ConfigError(f"no Kubernetes configuration (in-cluster or kubeconfig): {e}") from None


def result(name: str, method: str, *, data: str, out: str, preset: str, sets: dict | None = None,
           namespace: str | None = None, configuration=None, poll_s: int = 30,
           timeout_s: int = 7 * 24 * 3600) -> tuple[dict, list[dict]]:
    """Wait for the Experiment ``name`` to end; its best trial as the recipe ``jetlib tune`` writes, and every
    trial as :func:`jetlib.tune.study.history` lists them (``epochs`` empty: the StdOut collector reads one value).

    The SDK's ``wait_for_job_status`` reads Katib's conditions (``Succeeded`` or ``Failed`` true, set by the
    controller's ``UpdateExperimentStatusCondition``, ``pkg/controller.v1beta1/experiment/util/status_util.go``);
    the best trial is the Experiment's ``status.currentOptimalTrial`` (``updateTrialsSummary`` there: the
    largest objective by the metric's strategy), its values the trial's ``parameterAssignments`` (text).

    Raises:
        TrainingError: the Experiment failed (Katib's ``maxFailedTrialCount`` reached) or has no best trial.
    """
    from jetlib.tune.recipe import recipe_doc
    from jetlib.tune.study import _key, settings

    sdk = client(namespace, configuration)
    try:
        job = sdk.wait_for_job_status(name, status={"Complete", "Failed"}, timeout=timeout_s,
                                      polling_interval=poll_s)
        best = sdk.get_best_results(name) if job.status == "Complete" else None
    except (RuntimeError, TimeoutError) as e:
        raise TrainingError(f"Katib Experiment {name}: {e}: {str(e.__cause__ or '')[:300]}") from None
    if best is None:
        raise TrainingError(f"Katib Experiment {name} ended {job.status.lower()} with no successful trial: "
                            f"kubectl describe experiment {name} (its trials' logs say why)")
    rows = [_row(name, i, t) for i, t in enumerate(sorted(job.trials, key=lambda t: (t.trainjob.creation_timestamp,
                                                                                      t.name)))]
    objective = next(float(m.max) for m in best.metrics if m.name == METRIC)
    params = {k: float(v) for k, v in best.parameters.items()}
    number = next((r["number"] for r in rows if r["params"] == params), None)
    values = settings(method, params)
    doc = recipe_doc(method, values, preset=preset, data=str(data), fixed=dict(sets or {}),
                     objective={"name": METRIC, "split": "val", "value": objective},
                     study={"name": name, "trials": len(rows), "best_trial": number,
                            "run": f"{out.rstrip('/')}/trials/{_key(method, values)}"})
    return doc, rows


def _row(name: str, number: int, trial) -> dict:
    """One trial as a :func:`jetlib.tune.study.history` row; its value the one the trial printed (min = max)."""
    value = next((float(m.latest) for m in trial.metrics if m.name == METRIC), None)
    return {"study": name, "number": number, "state": "complete" if value is not None else "fail", "value": value,
            "epochs": {}, "params": {k: float(v) for k, v in trial.parameters.items()}}
