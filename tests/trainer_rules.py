"""What Kubeflow Trainer v2.3.0 decides about a TrainJob, re-stated for the API-server double.

Each function names the upstream code it stands in for (github.com/kubeflow/trainer, tag v2.3.0).
They are read from that source, not copied: field paths and messages are the ones a user sees in
the API server's reply, so a test that matches them matches what a real cluster answers.
"""

from __future__ import annotations

import hashlib
import json
import math
import re

TRAINJOB_WEBHOOK = "validator.trainjob.trainer.kubeflow.org"  # pkg/webhooks/trainjob_webhook.go
RUNTIME_WEBHOOK = "validator.trainingruntime.trainer.kubeflow.org"  # pkg/webhooks/trainingruntime_webhook.go
ANCESTOR = "trainer.kubeflow.org/trainjob-ancestor-step"  # pkg/constants: LabelTrainJobAncestor
# pkg/constants: the ancestor label value -> the container that must exist (expectedContainerNames)
ANCESTOR_CONTAINERS = {"trainer": "node", "model-initializer": "model-initializer",
                       "dataset-initializer": "dataset-initializer"}
NO_ENV_CONTAINERS = ("dataset-initializer", "model-initializer", "node")
PET_NAMES = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
TRAINER_PORT = 29500  # pkg/constants: ContainerTrainerPort
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
# k8s.io/apimachinery/pkg/util/validation: IsDomainPrefixedPath (a DNS-1123 subdomain, "/", a path)
DOMAIN_PREFIXED = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/\S+$")


def _invalid(path: str, value, detail: str) -> str:
    """A field.Invalid error as k8s.io/apimachinery/pkg/util/validation/field prints it."""
    return f"{path}: Invalid value: {json.dumps(value, separators=(',', ':'), sort_keys=True)}: {detail}"


def aggregate(errors: list[str]) -> str:
    """k8s.io/apimachinery/pkg/util/errors: one error prints alone, several as "[a, b]"."""
    unique = list(dict.fromkeys(errors))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def _rjobs(runtime: dict) -> list[dict]:
    return runtime["spec"]["template"]["spec"]["replicatedJobs"]


def _podspec(rjob: dict) -> dict:
    return ((rjob.get("template") or {}).get("spec") or {}).get("template", {}).get("spec") or {}


def validate_trainingruntime(runtime: dict) -> list[str]:
    """pkg/webhooks/trainingruntime_webhook.go, validateReplicatedJobs (create only)."""
    errors = []
    for i, rjob in enumerate(_rjobs(runtime)):
        labels = ((rjob.get("template") or {}).get("metadata") or {}).get("labels")
        ancestor = (labels or {}).get(ANCESTOR)
        if ancestor not in ANCESTOR_CONTAINERS:
            continue
        path = f"spec.template.spec.replicatedJobs[{i}]"
        if rjob.get("replicas", 1) != 1:  # the JobSet CRD defaults replicas to 1
            errors.append(_invalid(f"{path}.replicas", rjob.get("replicas"), "always must be 1"))
        containers = _podspec(rjob).get("containers") or []
        if not any(c.get("name") == ANCESTOR_CONTAINERS[ancestor] for c in containers):
            errors.append(_invalid(f"{path}.template.spec.template.spec.containers", containers,
                                   f"must contain the required container for the ancestor: {ancestor}"))
    return errors


def validate_trainjob(job: dict, runtime: dict | None, runtime_error: str = "") -> list[str]:
    """What the TrainJob validating webhook returns for ``job`` against its ``runtime``.

    pkg/webhooks/trainjob_webhook.go ValidateCreate -> pkg/runtime/core/trainingruntime.go
    ValidateObjects (the runtime must exist) -> the custom validation plugins:
    pkg/runtime/framework/plugins/jobset/jobset.go JobSet.Validate (runtime patches: the manager is a
    domain-prefixed path; patched replicated jobs and containers exist in the runtime; no env on the
    initializer and node containers) and pkg/runtime/framework/plugins/torch/torch.go Torch.Validate
    (no reserved PET_* names in trainer.env).
    """
    spec = job.get("spec") or {}
    if runtime is None:
        return [_invalid("spec.runtimeRef", spec.get("runtimeRef"),
                         f"{runtime_error}: specified trainingRuntime must be created before the TrainJob is created")]
    errors = []
    names = {r["name"]: {c["name"] for key in ("initContainers", "containers") for c in _podspec(r).get(key) or []}
             for r in _rjobs(runtime)}
    patches = spec.get("runtimePatches") or []
    for patch in patches:
        if not DOMAIN_PREFIXED.match(patch.get("manager") or ""):
            errors.append(_invalid("spec.runtimePatches.manager", patch.get("manager"),
                                   "must be a domain-prefixed path (such as \"acme.io/foo\")"))
        for rpatch in (((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}).get(
                "replicatedJobs") or []:
            if rpatch["name"] not in names:
                errors.append(_invalid("spec.runtimePatches", patches,
                                       "must not have replicated job that doesn't exist in the runtime job template"))
                continue
            pod = (((rpatch.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
            for c in pod.get("initContainers") or []:
                if c["name"] not in names[rpatch["name"]]:
                    errors.append(_invalid("spec.runtimePatches", patches, "must not have initContainer that "
                                           f"doesn't exist in the runtime job {rpatch['name']}"))
            for c in pod.get("containers") or []:
                if c["name"] not in names[rpatch["name"]]:
                    errors.append(_invalid("spec.runtimePatches", patches, "must not have container that "
                                           f"doesn't exist in the runtime job {rpatch['name']}"))
                elif c.get("env") and c["name"] in NO_ENV_CONTAINERS:
                    errors.append(_invalid("spec.runtimePatches", patches, "must not have envs for the "
                                           + ", ".join(NO_ENV_CONTAINERS) + " containers"))
    if "torch" in runtime["spec"].get("mlPolicy", {}):
        env = (spec.get("trainer") or {}).get("env") or []
        reserved = sorted({e["name"] for e in env if e["name"] in PET_NAMES})
        if reserved:
            errors.append(_invalid("spec.trainer.env", env, "must not have reserved envs, invalid envs "
                                   f"configured: [{' '.join(reserved)}]"))
    return errors


def _cpu_value(quantity) -> int:
    """resource.Quantity.Value() of a CPU quantity: rounded up to a whole core ("500m" -> 1)."""
    text = str(quantity)
    return math.ceil(int(text[:-1]) / 1000) if text.endswith("m") else math.ceil(float(text))


def pet_env(job: dict, runtime: dict, node_rank: int) -> dict[str, str]:
    """The PET_* variables the Trainer gives node ``node_rank`` of ``job`` (the kubelet's view).

    pkg/runtime/framework/plugins/torch/torch.go, EnforceMLPolicy: PET_NNODES = trainer.numNodes
    (else the runtime's mlPolicy.numNodes); PET_NPROC_PER_NODE = trainer.numProcPerNode, else "auto"
    with GPUs, else the CPU request (else limit) rounded up, at least 1, of trainer.resourcesPerNode or
    else of the runtime's node container; PET_NODE_RANK from the pod's job-completion-index
    annotation; PET_MASTER_ADDR = <job>-node-0-0.<job> (the JobSet's headless service); PET_MASTER_PORT
    = 29500. Not for torchtune commands, which get a rendezvous endpoint argument instead.
    """
    spec, name = job["spec"], job["metadata"]["name"]
    trainer = spec.get("trainer") or {}
    nodes = trainer.get("numNodes") or runtime["spec"]["mlPolicy"].get("numNodes") or 1
    (node,) = [r for r in _rjobs(runtime) if r["name"] == "node"]
    (container,) = [c for c in _podspec(node)["containers"] if c["name"] == "node"]
    resources = trainer.get("resourcesPerNode") or container.get("resources") or {}
    if trainer.get("numProcPerNode") is not None:
        nproc = str(trainer["numProcPerNode"])
    elif int((resources.get("limits") or {}).get("nvidia.com/gpu", 0)):
        nproc = "auto"
    else:
        cpu = (resources.get("requests") or {}).get("cpu") or (resources.get("limits") or {}).get("cpu") or 0
        nproc = str(max(1, _cpu_value(cpu)))
    return {"PET_NNODES": str(nodes), "PET_NPROC_PER_NODE": nproc, "PET_NODE_RANK": str(node_rank),
            "PET_MASTER_ADDR": f"{name}-node-0-0.{name}", "PET_MASTER_PORT": str(TRAINER_PORT)}


def pet_env_sources(job: dict, runtime: dict) -> list[dict]:
    """The same variables as container env entries: PET_NODE_RANK comes from a fieldRef."""
    values = pet_env(job, runtime, 0)
    return [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}} if k == "PET_NODE_RANK"
            else {"name": k, "value": values[k]} for k in PET_NAMES]


def merge_resources(base: dict, override: dict) -> dict:
    """pkg/util/trainingruntime/trainingruntime.go, MergeResourceRequirements (called from
    pkg/runtime/core/trainingruntime.go, newRuntimeInfo, for the trainer's ``node`` container): a
    strategic merge of ``trainer.resourcesPerNode`` onto the runtime container's resources. Limits and
    requests merge key by key, so a key the job does not name keeps the runtime's value."""
    out = {}
    for part in ("limits", "requests"):
        merged = {**(base.get(part) or {}), **(override.get(part) or {})}
        if merged:
            out[part] = merged
    return out


def node_pod(job: dict, runtime: dict, index: int) -> dict:
    """The pod the Job controller asks the API server for, for node ``index`` of TrainJob ``job``.

    The runtime's ``node`` pod template with what Trainer v2.3.0 puts into the JobSet: the job's image
    and command on the ``node`` container (pkg/runtime/framework/plugins/jobset, Build), its resources
    merged (:func:`merge_resources`), the PET_* environment (:func:`pet_env_sources`), the runtime
    patches' node selector and tolerations; then JobSet v0.12.0's pod labels (pkg/constants:
    jobset-name, replicatedjob-name, job-index, restart-attempt) and the Job controller's
    completion index; its name is the indexed Job's generateName, ``<job>-<index>-`` plus five characters.
    """
    name = job["metadata"]["name"]
    (rjob,) = [r for r in _rjobs(runtime) if r["name"] == "node"]
    template = json.loads(json.dumps(rjob["template"]["spec"]["template"]))
    spec = template["spec"]
    trainer = job["spec"].get("trainer") or {}
    for c in spec["containers"]:
        if c["name"] != "node":
            continue
        if trainer.get("image"):
            c["image"] = trainer["image"]
        if trainer.get("command"):
            c["command"] = list(trainer["command"])
        if trainer.get("resourcesPerNode"):
            c["resources"] = merge_resources(c.get("resources") or {}, trainer["resourcesPerNode"])
        c["env"] = [*(c.get("env") or []), *pet_env_sources(job, runtime)]
    for patch in job["spec"].get("runtimePatches") or []:
        for rpatch in (((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}).get(
                "replicatedJobs") or []:
            pod = (((rpatch.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
            if pod.get("nodeSelector"):
                spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **pod["nodeSelector"]}
            if pod.get("tolerations"):
                spec["tolerations"] = [*(spec.get("tolerations") or []), *pod["tolerations"]]
    job_name = f"{name}-node-0"
    labels = {**(template.get("metadata") or {}).get("labels", {}),
              "jobset.sigs.k8s.io/jobset-name": name, "jobset.sigs.k8s.io/replicatedjob-name": "node",
              "jobset.sigs.k8s.io/job-index": "0", "jobset.sigs.k8s.io/restart-attempt": "0",
              "batch.kubernetes.io/job-name": job_name, "batch.kubernetes.io/job-completion-index": str(index)}
    suffix = hashlib.sha256(f"{name}/{index}".encode()).hexdigest()[:5]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{job_name}-{index}-{suffix}", "labels": labels,
                         "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "spec": spec}
