"""What a multi-node pretraining job is: the request, and the objects sent for it. No API call here.

Every node runs the same ``jetlib pretrain`` (any method, any encoder: the flags reach it as given)
under ``torchrun``; the nodes share the dataset, the checkpoints and the output through the object
store (``--out`` must be ``s3://``), so rank 0 writes the one ``encoder.pt`` and ``run.json``, and a
job re-submitted after a preemption resumes from the newest checkpoint there.

Two backends, both built from one :class:`JobRequest`:

``trainjob`` (default)
    A Kubeflow Trainer v2 ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) on jetlib's own namespaced
    ``TrainingRuntime`` ``jetlib-torch`` (``manifests/base/runtime``), created through the ``kubeflow``
    SDK's ``TrainerClient`` from :func:`trainer` (a ``CustomTrainerContainer``) and
    :func:`trainjob_options` (a ``TrainerCommand``). The runtime, not the job, carries the credentials
    Secret, the non-root read-only containers, ``restartPolicy: Never`` and ``backoffLimit: 0``
    (Trainer's webhook refuses env patches on the ``node`` container); a runtime patch adds only a node
    selector and tolerations when asked. The Trainer injects every ``PET_*`` variable ``torchrun``
    reads (nodes, processes per node, node rank, master address and port), so the command passes none.
``pytorchjob``
    A ``kubeflow.org/v1`` ``PyTorchJob`` (:func:`pytorchjob_body`) for clusters that still run the
    Training Operator v1, which sets the same ``PET_*`` variables.

The job name is derived from ``--out`` (:func:`job_name`), so submitting the same step twice
attaches to a running job instead of starting a second one, and re-submits a failed one.

Credentials never appear in a job body: workers read ``JETLIB_S3_ENDPOINT``,
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` from the Secret by reference (``secretKeyRef``).
The ``kubeflow`` SDK is imported inside the two functions that build its objects: the pipeline reads
:data:`UID` from here without it.
"""

from __future__ import annotations

import dataclasses
import hashlib

from jetlib.errors import ConfigError

BACKENDS = ("trainjob", "pytorchjob")
RUNTIME = "jetlib-torch"  # jetlib's namespaced TrainingRuntime (manifests/base/runtime/trainingruntime.yaml)
SECRET_KEYS = ("JETLIB_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
UID = 1000  # the images' non-root user (images/Dockerfile)
# What a GPU worker asks for per GPU besides the GPU: the runtime's 2 CPUs / 4 GiB (CPU pods) would
# otherwise stay, since Trainer merges resourcesPerNode into them key by key. /dev/shm counts here.
CPU_PER_GPU = 4
MEMORY_GI_PER_GPU = 16
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}  # as the pipeline's own GPU steps
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """Everything a multi-node pretraining job is made from (validated by :meth:`check`)."""

    data: str  # dataset URI (s3://...) every node reads
    out: str  # output URI (s3://...) every node shares; rank 0 writes run.json
    nodes: int  # pods, one torchrun agent each
    gpus_per_node: int  # 0: CPU pods, one process each
    image: str  # a jetlib image, never a :latest tag
    preset: str  # tiny | cpu | gpu
    augment: str  # seed | physics
    extra_args: tuple[str, ...] = ()  # more `jetlib pretrain` flags, e.g. ("--epochs", "5")
    secret: str | None = "jetlib-s3"  # Secret holding SECRET_KEYS; None: none mounted
    namespace: str = "default"
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: tuple[dict, ...] = ()
    shm_size: str = "2Gi"  # /dev/shm for the data loader and gloo/NCCL (PyTorchJob; a TrainJob's runtime sets it)
    runtime: str = RUNTIME  # the namespaced TrainingRuntime a TrainJob runs on

    def check(self) -> None:
        """Raise ConfigError naming the first unusable field."""
        if self.nodes < 1:
            raise ConfigError(f"nodes must be >= 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise ConfigError(f"gpus_per_node must be >= 0, got {self.gpus_per_node}")
        for name in ("data", "out"):
            uri = getattr(self, name)
            if not uri.startswith("s3://"):
                raise ConfigError(f"{name} {uri!r}: nodes share data and output through the store, "
                                  "so a multi-node run needs an s3:// URI")
        if not self.image or self.image.endswith(":latest") or ":" not in self.image.rsplit("/", 1)[-1]:
            raise ConfigError(f"image {self.image!r}: give an explicit, non-latest tag (e.g. jetlib:0.1.0)")


def job_name(out: str) -> str:
    """A stable, DNS-safe job name for one output URI, e.g. ``jetlib-pretrain-3f2a9c01d4``."""
    return "jetlib-pretrain-" + hashlib.sha256(out.encode()).hexdigest()[:10]


def trainer_command(req: JobRequest) -> list[str]:
    """The command every TrainJob node runs: ``torchrun`` takes everything distributed from ``PET_*``.

    Kubeflow Trainer's torch plugin sets PET_NNODES, PET_NPROC_PER_NODE (the GPUs, or with none the
    CPU request rounded up), PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT on every node; an
    explicit flag would override them, so none is given.
    """
    return ["python", "-m", "torch.distributed.run", "-m", "jetlib", "pretrain", "--data", req.data,
            "--out", req.out, "--preset", req.preset, "--augment", req.augment, *req.extra_args]


def secret_env(secret: str | None) -> list[dict]:
    """Environment variables filled from the Secret by reference: the body never holds a value."""
    if not secret:
        return []
    return [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} for k in SECRET_KEYS]


def pod_parts(req: JobRequest) -> dict:
    """Volumes, mounts and security settings of a PyTorchJob pod (a TrainJob's come from its runtime).

    They meet Pod Security "restricted": non-root, seccomp RuntimeDefault, no privilege escalation,
    every capability dropped.
    """
    return {
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": req.shm_size}},
                    {"name": "tmp", "emptyDir": {}}],
        "mounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}],
        "pod_security": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                         "seccompProfile": {"type": "RuntimeDefault"}},
        # The image writes only under /tmp (HOME caches, torch compile cache): the root stays read-only.
        "container_security": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                               "capabilities": {"drop": ["ALL"]}},
    }


def pytorchjob_body(req: JobRequest, name: str) -> dict:
    """A ``kubeflow.org/v1`` PyTorchJob: one Master and ``nodes - 1`` Workers running the same command."""
    parts = pod_parts(req)
    # The Training Operator sets PET_NNODES / PET_NODE_RANK / PET_NPROC_PER_NODE but the master as
    # MASTER_ADDR / MASTER_PORT, which torchrun does not read: hand them over (kubelet expands $(VAR)).
    command = trainer_command(req)
    command[3:3] = ["--master-addr", "$(MASTER_ADDR)", "--master-port", "$(MASTER_PORT)",
                    "--nproc-per-node", str(max(1, req.gpus_per_node))]
    container = {"name": "pytorch", "image": req.image, "imagePullPolicy": "IfNotPresent",
                 "command": command, "env": secret_env(req.secret),
                 "volumeMounts": parts["mounts"], "securityContext": parts["container_security"]}
    if req.gpus_per_node:
        container["resources"] = {"limits": {"nvidia.com/gpu": req.gpus_per_node}}
    else:  # the same requests as the TrainJob runtime's CPU pods
        container["resources"] = {"requests": {"cpu": "500m", "memory": "1Gi"},
                                  "limits": {"cpu": "2", "memory": "4Gi"}}
    # one torchrun agent per node: two pods of this job never share one
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": {"training.kubeflow.org/job-name": name}}}]}}
    pod = {"containers": [container], "volumes": parts["volumes"], "securityContext": parts["pod_security"],
           "affinity": anti}
    if req.node_selector:
        pod["nodeSelector"] = dict(req.node_selector)
    if req.tolerations:
        pod["tolerations"] = list(req.tolerations)
    # Never restart a rank in place: a resubmission resumes the whole job from the checkpoint.
    replica = {"restartPolicy": "Never", "template": {"metadata": {"labels": {"app": "jetlib-pretrain"}},
                                                      "spec": pod}}
    specs = {"Master": {"replicas": 1, **replica}}
    if req.nodes > 1:
        specs["Worker"] = {"replicas": req.nodes - 1, **replica}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": req.namespace, "labels": {"app": "jetlib-pretrain"}},
            "spec": {"nprocPerNode": str(max(1, req.gpus_per_node)),
                     "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
                     "pytorchReplicaSpecs": specs}}


def trainjob_options(req: JobRequest, name: str) -> list:
    """``TrainerClient.train`` options: name, labels, command, and scheduling constraints if any.

    Everything else a pod needs is in the runtime (:data:`RUNTIME`): Trainer's JobSet plugin refuses a
    runtime patch that sets env on the ``node`` container, so credentials cannot come from here.
    """
    from kubeflow.trainer.options.common import Name
    from kubeflow.trainer.options.kubernetes import (
        JobSetSpecPatch,
        JobSetTemplatePatch,
        JobSpecPatch,
        JobTemplatePatch,
        Labels,
        PodSpecPatch,
        PodTemplatePatch,
        ReplicatedJobPatch,
        RuntimePatch,
        TrainerCommand,
        TrainingRuntimeSpecPatch,
    )

    options = [Name(name), Labels({"app": "jetlib-pretrain"}), TrainerCommand(trainer_command(req))]
    if req.node_selector or req.tolerations:
        pod = PodSpecPatch(node_selector=dict(req.node_selector) or None, tolerations=list(req.tolerations) or None)
        options.append(RuntimePatch(training_runtime_spec=TrainingRuntimeSpecPatch(template=JobSetTemplatePatch(
            spec=JobSetSpecPatch(replicated_jobs=[ReplicatedJobPatch(name="node", template=JobTemplatePatch(
                spec=JobSpecPatch(template=PodTemplatePatch(spec=pod))))])))))
    return options


def resources_per_node(gpus_per_node: int) -> dict | None:
    """The TrainJob's ``resourcesPerNode`` (the SDK's dict form): None for CPU pods, else the GPUs and
    the CPU and memory of a GPU worker (:data:`CPU_PER_GPU`, :data:`MEMORY_GI_PER_GPU` per GPU).

    Kubeflow Trainer v2.3.0 merges it into the runtime's container resources key by key
    (pkg/runtime/core/trainingruntime.go, newRuntimeInfo, through MergeResourceRequirements): a key it
    does not name keeps the runtime's value, so GPUs alone would leave a GPU worker the CPU pods'
    limit of 2 CPUs and 4 GiB. The SDK sets each key as request and limit.
    """
    if not gpus_per_node:
        return None
    return {"gpu": gpus_per_node, "cpu": str(CPU_PER_GPU * gpus_per_node),
            "memory": f"{MEMORY_GI_PER_GPU * gpus_per_node}Gi"}


def trainer(req: JobRequest):
    """The SDK's ``CustomTrainerContainer``: image, node count, and a GPU worker's resources if any.

    CPU pods keep the runtime's requests (and so one process each, PET_NPROC_PER_NODE=1); with GPUs
    torchrun starts one process per visible GPU (PET_NPROC_PER_NODE=auto).
    """
    from kubeflow.trainer import CustomTrainerContainer

    return CustomTrainerContainer(image=req.image, num_nodes=req.nodes,
                                  resources_per_node=resources_per_node(req.gpus_per_node))


def check_runtime(runtime: dict, secret: str | None) -> None:
    """Raise ConfigError unless ``runtime``'s node container reads every SECRET_KEYS from ``secret``.

    The launcher cannot add the Secret itself (see :func:`trainjob_options`), so a runtime that does
    not carry it would start pods that fail on their first store access; say so before submitting.
    """
    name = runtime.get("metadata", {}).get("name")
    if not secret:
        return
    refs = {}
    for rjob in runtime.get("spec", {}).get("template", {}).get("spec", {}).get("replicatedJobs") or []:
        if rjob.get("name") != "node":
            continue
        for c in rjob.get("template", {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
            if c.get("name") == "node":
                refs = {e["name"]: (e.get("valueFrom") or {}).get("secretKeyRef") or {} for e in c.get("env") or []}
    missing = [k for k in SECRET_KEYS if refs.get(k, {}).get("name") != secret or refs[k].get("key") != k]
    if missing:
        raise ConfigError(f"TrainingRuntime {name!r}: its node container must read {', '.join(missing)} from "
                          f"Secret {secret!r} (secretKeyRef, key = variable name); see "
                          "manifests/base/runtime/trainingruntime.yaml")
