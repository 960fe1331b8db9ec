"""Katib v0.19.0's Experiment admission, for the API-server double (tests/k8s_double.py).

Katib's webhooks run in this order on a created Experiment:

1. mutating: ``pkg/apis/controller/experiments/v1beta1/experiment_defaults.go``, ``Experiment.SetDefault``
   (parallelTrialCount 3, resumePolicy Never, the objective's metric strategies, a TrainJob trial's
   success and failure conditions and primary pod labels, the StdOut metrics collector): :func:`set_default`;
2. validating: ``pkg/webhook/v1beta1/experiment/validator/validator.go``, ``DefaultValidator.ValidateExperiment``
   (with ``validateObjective``, ``validateAlgorithm``, ``validateResumePolicy``, ``validateParameters``,
   ``validateTrialTemplate``, ``validateMetricsCollector``): :func:`validate_experiment`.

After admission the controllers run the Experiment; :func:`trial` and :func:`update_status` write what they
leave in the API server for a reader (the kubeflow SDK's ``OptimizerClient.get_job`` and ``get_best_results``):
the Trials (``pkg/controller.v1beta1/experiment/experiment_controller_util.go``, ``getTrialInstance``), their
TrainJobs, and the Experiment's status (``pkg/controller.v1beta1/experiment/util/status_util.go``).

The messages are field errors as ``field.ErrorList`` prints them (``<path>: Invalid value: ...: <msg>``,
``<path>: Required value: <msg>``), joined as ``ToAggregate`` does. The algorithm names are those of
``manifests/v1beta1/installs/katib-standalone/katib-config.yaml`` (``GetSuggestionConfigData``).
"""

from __future__ import annotations

import copy
import json
import re

EXPERIMENT_WEBHOOK = "validator.experiment.katib.kubeflow.org"
ALGORITHMS = ("random", "tpe", "grid", "hyperband", "bayesianoptimization", "cmaes", "sobol", "multivariate-tpe",
              "enas", "darts", "pbt")  # katib-config.yaml's suggestions
EARLY_STOPPING = ("medianstop",)
KUBEFLOW_JOB_KINDS = ("TFJob", "PyTorchJob", "XGBoostJob", "MPIJob", "TrainJob")  # constants.go, KubeflowJobKinds
TRAINJOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
TRAINJOB_FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
TRAINJOB_POD_LABELS = {"jobset.sigs.k8s.io/replicatedjob-name": "node", "batch.kubernetes.io/job-completion-index": "0"}
PARAM_TYPES = ("int", "double", "categorical", "discrete", "unknown")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal", "unknown")
COLLECTORS = ("StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None", "Push")
META_KEYS = ("Name", "Namespace", "Kind", "APIVersion", "Labels", "Annotations")  # consts.TrialTemplateMetaKeys


def set_default(exp: dict) -> dict:
    """``Experiment.SetDefault``, on a copy."""
    exp = copy.deepcopy(exp)
    spec = exp.setdefault("spec", {})
    spec.setdefault("parallelTrialCount", 3)
    spec["resumePolicy"] = spec.get("resumePolicy") or "Never"
    obj = spec.get("objective")
    if obj is not None:
        strategies = obj.get("metricStrategies") or []
        named = {s.get("name") for s in strategies}
        extract = {"minimize": "min", "maximize": "max"}.get(obj.get("type"), "latest")
        for name in [obj.get("objectiveMetricName"), *(obj.get("additionalMetricNames") or [])]:
            if name not in named:
                strategies.append({"name": name, "value": extract})
        obj["metricStrategies"] = strategies
    tt = spec.get("trialTemplate")
    if tt is not None and tt.get("trialSpec") is not None:
        kind = tt["trialSpec"].get("kind")
        if kind == "Job":
            tt["successCondition"] = tt.get("successCondition") or TRAINJOB_SUCCESS  # the Job's is the same
            tt["failureCondition"] = tt.get("failureCondition") or TRAINJOB_FAILURE
        elif kind in KUBEFLOW_JOB_KINDS:
            train = kind == "TrainJob"
            tt["successCondition"] = tt.get("successCondition") or (
                TRAINJOB_SUCCESS if train else 'status.conditions.#(type=="Succeeded")#|#(status=="True")#')
            tt["failureCondition"] = tt.get("failureCondition") or TRAINJOB_FAILURE
            tt["primaryPodLabels"] = tt.get("primaryPodLabels") or (
                dict(TRAINJOB_POD_LABELS) if train else {"training.kubeflow.org/job-role": "master"})
    mc = spec.setdefault("metricsCollectorSpec", {})
    mc.setdefault("collector", {"kind": "StdOut"})
    return exp


def _invalid(path: str, value, msg: str) -> str:
    return f"{path}: Invalid value: {json.dumps(value)}: {msg}"


def _required(path: str, msg: str) -> str:
    return f"{path}: Required value: {msg}"


def validate_experiment(exp: dict) -> list[str]:
    """``ValidateExperiment(instance, nil)`` on a defaulted Experiment: the field errors, [] when admitted."""
    errs = []
    name = exp.get("metadata", {}).get("name", "")
    if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 40:
        errs.append(_invalid("metadata.name", name, "name must consist of lower case alphanumeric characters or "
                             "'-', start with an alphabetic character, and end with an alphanumeric character and "
                             "may not be longer than 40 characters."))
    spec = exp.get("spec", {})
    mf, mt, pt = spec.get("maxFailedTrialCount"), spec.get("maxTrialCount"), spec.get("parallelTrialCount")
    if mf is not None and mf < 0:
        errs.append(_invalid("spec.maxFailedTrialCount", mf, "should not be less than 0"))
    if mt is not None and mt <= 0:
        errs.append(_invalid("spec.maxTrialCount", mt, "must be greater than 0"))
    if pt is not None and pt <= 0:
        errs.append(_invalid("spec.parallelTrialCount", pt, "must be greater than 0"))
    if mf is not None and mt is not None and mf > mt:
        errs.append(_invalid("spec.maxFailedTrialCount", mf, "should be less than or equal to spec.maxTrialCount"))
    if pt is not None and mt is not None and pt > mt:
        errs.append(_invalid("spec.parallelTrialCount", pt, "should be less than or equal to spec.maxTrialCount"))
    objective = _objective(spec.get("objective"))
    if objective:  # validateObjective's errors end the validation
        return errs + objective
    errs += _algorithm(spec.get("algorithm"), "spec.algorithm", ALGORITHMS, "Suggestion")
    if spec.get("earlyStopping") is not None:
        errs += _algorithm(spec["earlyStopping"], "spec.earlyStopping", EARLY_STOPPING, "EarlyStopping")
    if spec.get("resumePolicy", "") not in ("", "Never", "LongRunning", "FromVolume"):
        errs.append(_invalid("spec.resumePolicy", spec["resumePolicy"], "invalid ResumePolicyType"))
    errs += _trial_template(spec)
    params = spec.get("parameters") or []
    if not params and spec.get("nasConfig") is None:
        errs.append(_required("spec", "spec.parameters or spec.nasConfig must be specified"))
    if params and spec.get("nasConfig") is not None:
        errs.append(_invalid("spec", "", "only one of spec.parameters and spec.nasConfig can be specified"))
    errs += _parameters(params)
    kind = ((spec.get("metricsCollectorSpec") or {}).get("collector") or {}).get("kind")
    if kind not in COLLECTORS:
        errs.append(_invalid("spec.metricsCollectorSpec.collector.kind", kind, f"invalid metrics collector kind: "
                                                                                f"{kind}"))
    return errs


def _objective(obj) -> list[str]:
    if obj is None:
        return [_required("spec.objective", "must be specified")]
    errs = []
    if obj.get("type") not in ("minimize", "maximize"):
        errs.append(_invalid("spec.objective.type", obj.get("type"), "must be minimize or maximize"))
    if not obj.get("objectiveMetricName"):
        errs.append(_required("spec.objective.objectiveMetricName", "must be specified"))
    if obj.get("objectiveMetricName") in (obj.get("additionalMetricNames") or []):
        errs.append(_invalid("spec.objective.additionalMetricNames", obj["additionalMetricNames"],
                             "should not contain spec.objective.objectiveMetricName"))
    return errs


def _algorithm(spec, path: str, known: tuple, what: str) -> list[str]:
    if spec is None:
        return [_required(path, "must be specified")]
    errs = []
    name = spec.get("algorithmName", "")
    if not name:
        errs.append(_required(f"{path}.algorithmName", "must be specified"))
    if name not in known:
        errs.append(_invalid(f"{path}.algorithmName", name, f"unable to get {what} config data for algorithm "
                                                            f"{name}: failed to find algorithm '{name}' config"))
    return errs


def _parameters(params: list) -> list[str]:
    errs = []
    for i, p in enumerate(params):
        path, ptype, fs = f"spec.parameters[{i}]", p.get("parameterType", ""), p.get("feasibleSpace") or {}
        if ptype not in PARAM_TYPES and ptype != "":
            errs.append(_invalid(f"{path}.parameterType", ptype, f"parameterType: {ptype} is not supported"))
        if fs.get("distribution") and fs["distribution"] not in DISTRIBUTIONS:
            errs.append(_invalid(f"{path}.feasibleSpace.distribution", fs["distribution"],
                                 f"distribution: {fs['distribution']} is not supported"))
        if not any(fs.values()):
            errs.append(_required(f"{path}.feasibleSpace", "feasibleSpace must be specified"))
        elif ptype in ("double", "int"):
            if fs.get("list"):
                errs.append(_invalid(f"{path}.feasibleSpace.list", fs["list"],
                                     f"feasibleSpace.list is not supported for parameterType: {ptype}"))
            if not fs.get("max") or not fs.get("min"):
                errs.append(_required(f"{path}.feasibleSpace.max", "feasibleSpace.max or feasibleSpace.min must be "
                                                                   f"specified for parameterType: {ptype}"))
        elif ptype in ("categorical", "discrete") and (fs.get("max") or fs.get("min") or fs.get("step")):
            errs.append(_invalid(f"{path}.feasibleSpace", fs, "feasibleSpace .max, .min and .step is not supported "
                                                              f"for parameterType: {ptype}"))
    return errs


def _trial_template(spec: dict) -> list[str]:
    tt, path = spec.get("trialTemplate"), "spec.trialTemplate"
    if tt is None:
        return [_required(path, "must be specified")]
    errs = []
    if not tt.get("primaryContainerName"):
        errs.append(_required(f"{path}.primaryContainerName", "must be specified"))
    if not tt.get("successCondition") or not tt.get("failureCondition"):
        errs.append(_required(path, "successCondition and failureCondition must be specified"))
    if tt.get("trialParameters") is None:
        return errs + [_required(f"{path}.trialParameters", "must be specified")]
    if tt.get("trialSpec") is None and tt.get("configMap") is None:
        return errs + [_required(f"{path}.TrialSource", "spec.trialTemplate.trialSpec or "
                                                        "spec.trialTemplate.configMap must be specified")]
    if tt.get("trialSpec") is not None and tt.get("configMap") is not None:
        return errs + [_required(path, "only one of spec.trialTemplate.trialSpec or spec.trialTemplate.configMap "
                                       "can be specified")]
    text = json.dumps(tt["trialSpec"])  # GetTrialTemplate: the trialSpec as a JSON string
    declared = {p.get("name") for p in spec.get("parameters") or []}
    names, refs = set(), set()
    for i, p in enumerate(tt["trialParameters"]):
        ppath, name, ref = f"{path}.trialParameters[{i}]", p.get("name", ""), p.get("reference", "")
        if not name or not ref or "{" in name or "}" in name:
            errs.append(_invalid(ppath, "", "name and reference must be specified and name must not contain '{' "
                                            "or '}'"))
            continue
        if name in names:
            errs.append(_invalid(f"{ppath}.name", name, f"parameter name {name} can't be duplicated"))
            continue
        if ref in refs:
            errs.append(_invalid(f"{ppath}.reference", ref, f"parameter reference {ref} can't be duplicated"))
            continue
        names.add(name)
        refs.add(ref)
        if declared and not _is_meta(ref) and ref not in declared:
            errs.append(_invalid(f"{ppath}.reference", ref, f"parameter reference {ref} does not exist in "
                                                            "spec.parameters"))
        token = "${trialParameters." + name + "}"
        if token not in text:
            return errs + [_invalid(f"{ppath}.name", name, f"parameter name: {name} in spec.trialParameters not "
                                                           "found in spec.trialTemplate")]
        text = text.replace(token, "test-value")
    left = re.findall(r"\$\{trialParameters\..+?\}", text)
    if left:
        go_list = "[" + " ".join(left) + "]"  # Go's %v of a []string
        errs.append(_invalid(path, "", f"parameters: {go_list} in spec.trialTemplate not found in "
                                       "spec.trialParameters"))
    run = json.loads(text)
    meta = run.get("metadata") or {}
    if meta.get("name") or meta.get("namespace"):
        errs.append(_invalid(path, "", "metadata.name and metadata.namespace in spec.trialTemplate must be omitted"))
    if not run.get("apiVersion") or not run.get("kind"):
        errs.append(_required(path, "APIVersion and Kind in spec.trialTemplate must be specified"))
    return errs


def _is_meta(ref: str) -> bool:
    m = re.search(r"\$\{trialSpec\.(.+?)\}", ref)
    if not m:
        return False
    key = m.group(1)
    sub = re.match(r"(.+)\[(.+)\]", key)
    return key in META_KEYS or bool(sub and sub.group(1) in META_KEYS)


def aggregate(errors: list[str]) -> str:
    """``field.ErrorList.ToAggregate().Error()``: one error as is, several in brackets."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


def admit_experiment(body: dict) -> tuple[dict, list[str]]:
    """The stored (defaulted) Experiment and the validator's errors."""
    exp = set_default(body)
    return exp, validate_experiment(exp)


EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"  # pkg/controller.v1beta1/consts/const.go, LabelExperimentName


def trial(exp: dict, name: str, assignments: dict[str, str], value: str | None) -> tuple[dict, dict]:
    """(the Trial, its TrainJob) for one suggestion of ``exp``, ended: Succeeded with ``value`` observed, or
    Failed (``value`` None).

    ``getTrialInstance``: the Experiment's labels plus ``katib.kubeflow.org/experiment``, its objective, the
    assignments, and the run spec: the trial template with each ``${trialParameters.NAME}`` replaced by its
    value (``manifest/generator.go``, ``applyParameters``) and named after the trial. The collector's
    observation holds ``min``, ``max`` and ``latest`` of the metric as text (one value printed: all three it).
    """
    spec = exp["spec"]
    meta = {"name": name, "namespace": exp["metadata"]["namespace"],
            "labels": {**(exp["metadata"].get("labels") or {}), EXPERIMENT_LABEL: exp["metadata"]["name"]}}
    text = json.dumps(spec["trialTemplate"]["trialSpec"])
    for p in spec["trialTemplate"]["trialParameters"]:
        text = text.replace("${trialParameters." + p["name"] + "}", assignments[p["reference"]])
    run = {**json.loads(text), "metadata": {"name": name, "namespace": meta["namespace"]}}
    status: dict = {"conditions": [{"type": "Succeeded" if value is not None else "Failed", "status": "True"}]}
    if value is not None:
        status["observation"] = {"metrics": [{"name": spec["objective"]["objectiveMetricName"], "min": value,
                                              "max": value, "latest": value}]}
    obj = {"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial", "metadata": meta,
           "spec": {"objective": spec["objective"], "runSpec": run,
                    "parameterAssignments": [{"name": k, "value": v} for k, v in assignments.items()]},
           "status": status}
    return obj, run


def _objective_value(t: dict) -> str | None:
    """``getObjectiveMetricValue``: the objective's metric by its strategy (``min``, ``max`` or ``latest``)."""
    obj = t["spec"]["objective"]
    strategy = next((s["value"] for s in obj.get("metricStrategies") or [] if s["name"] == obj["objectiveMetricName"]),
                    "latest")
    for m in (t.get("status", {}).get("observation") or {}).get("metrics") or []:
        if m["name"] == obj["objectiveMetricName"]:
            return m[strategy]
    return None


def update_status(exp: dict, trials: list[dict]) -> None:
    """``UpdateExperimentStatus`` for ended trials: ``updateTrialsSummary`` (counts, lists and
    ``currentOptimalTrial``: the best objective by the objective's type, the first trial on a tie), then
    ``UpdateExperimentStatusCondition``'s max-failed and max-trials rules, each condition set as
    ``MarkExperimentStatusSucceeded`` / ``Failed`` set them (Running turned False, the new one appended)."""
    def ended(t, kind):
        return any(c["type"] == kind and c["status"] == "True" for c in t["status"]["conditions"])

    spec, sts = exp["spec"], exp.setdefault("status", {})
    succeeded = [t["metadata"]["name"] for t in trials if ended(t, "Succeeded")]
    failed = [t["metadata"]["name"] for t in trials if ended(t, "Failed")]
    sts.update({"trials": len(trials), "trialsSucceeded": len(succeeded), "trialsFailed": len(failed),
                "succeededTrialList": succeeded, "failedTrialList": failed})
    best, best_value = None, None
    for t in trials:
        value = _objective_value(t)
        if value is None:
            continue
        v = float(value)
        if best is None or (v > best_value if spec["objective"]["type"] == "maximize" else v < best_value):
            best, best_value = t, v
    if best is not None:
        sts["currentOptimalTrial"] = {"bestTrialName": best["metadata"]["name"],
                                      "parameterAssignments": best["spec"]["parameterAssignments"],
                                      "observation": best["status"]["observation"]}
    conditions = [c for c in sts.get("conditions") or [] if c["type"] not in ("Running", "Succeeded", "Failed")]
    conditions.append({"type": "Running", "status": "False", "reason": "ExperimentRunning"})
    if spec.get("maxFailedTrialCount") is not None and failed and len(failed) >= spec["maxFailedTrialCount"]:
        conditions.append({"type": "Failed", "status": "True", "reason": "ExperimentFailed",
                           "message": "Experiment has failed because max failed count has reached"})
    elif len(trials) >= spec["maxTrialCount"]:
        conditions.append({"type": "Succeeded", "status": "True", "reason": "ExperimentMaxTrialsReached",
                           "message": "Experiment has succeeded because max trial count has reached"})
    else:
        conditions[-1] = {"type": "Running", "status": "True", "reason": "ExperimentRunning"}
    sts["conditions"] = conditions
