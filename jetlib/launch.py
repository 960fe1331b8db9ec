"""Multi-node pretraining (any method, encoder) on Kubernetes: submit, stream node 0's log, wait, read the result back.

The pretrain KFP component calls :func:`launch_pretrain` when a run asks for more than one node.
Every node runs the same ``jetlib pretrain`` under ``torchrun``; they share the dataset, the
checkpoints and the output through the object store (``--out`` must be ``s3://``), so rank 0 writes
the one ``encoder.pt`` and ``run.json``, and a job re-submitted after a preemption resumes from the
newest checkpoint there.

Two backends:

``trainjob`` (default)
    A Kubeflow Trainer v2 ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) on jetlib's own namespaced
    ``TrainingRuntime`` ``jetlib-torch`` (``manifests/base/runtime``), created through the ``kubeflow``
    SDK's ``TrainerClient`` with a ``CustomTrainerContainer`` and a ``TrainerCommand``. The runtime, not
    the job, carries the credentials Secret, the non-root read-only containers, ``restartPolicy: Never``
    and ``backoffLimit: 0`` (Trainer's webhook refuses env patches on the ``node`` container); a runtime
    patch adds only a node selector and tolerations when asked. The Trainer injects every ``PET_*``
    variable ``torchrun`` reads (nodes, processes per node, node rank, master address and port), so the
    command passes none of them.
``pytorchjob``
    A ``kubeflow.org/v1`` ``PyTorchJob`` for clusters that still run the Training Operator v1,
    which sets the same ``PET_*`` variables.

The job name is derived from ``--out`` (:func:`job_name`), so submitting the same step twice
attaches to a running job instead of starting a second one, and re-submits a failed one.

Credentials never appear in a job body: workers read ``JETLIB_S3_ENDPOINT``,
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` from the Secret by reference (``secretKeyRef``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import signal
import threading
import time

from jetlib.errors import ConfigError, TrainingError

BACKENDS = ("trainjob", "pytorchjob")
RUNTIME = "jetlib-torch"  # jetlib's namespaced TrainingRuntime (manifests/base/runtime/trainingruntime.yaml)
SECRET_KEYS = ("JETLIB_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
UID = 1000  # the images' non-root user (images/Dockerfile)
# How long the launcher waits (docs/cluster-readings.md): the whole job; a pod no node fits (a cluster
# autoscaler adding a GPU node takes minutes); an image pull or container start that keeps failing.
TIMEOUT_S = 24 * 3600.0
PENDING_S = 900.0
GRACE_S = 45.0  # with a 10 s poll: failed within a minute of the first failed pull
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


class Cancelled(BaseException):
    """SIGTERM arrived (the KFP step was cancelled): the job is deleted on the way out."""


def launch_pretrain(*, data: str, out: str, nodes: int, gpus_per_node: int, image: str, preset: str,
                    augment: str, extra_args: list[str] | tuple[str, ...] = (), secret: str | None,
                    namespace: str | None = None, backend: str = "trainjob", timeout_s: float = TIMEOUT_S,
                    node_selector: dict[str, str] | None = None, tolerations: list[dict] | None = None,
                    poll_s: float = 10.0, grace_s: float = GRACE_S, pending_s: float = PENDING_S,
                    runtime: str = RUNTIME) -> dict:
    """Run ``jetlib pretrain`` on ``nodes`` pods and return its ``run.json``.

    Submits the job (or attaches to the running one for the same ``out``), prints node 0's log
    as it comes, waits at most ``timeout_s`` seconds, and reads the finished run back from
    ``out``. On a timeout, a failure, SIGTERM or Ctrl-C the job is deleted.

    Args:
        data, out: ``s3://`` URIs shared by every node.
        nodes, gpus_per_node: pods, and GPUs (= processes) per pod; 0 GPUs runs one CPU process.
        image: a jetlib image with an explicit tag.
        preset, augment, extra_args: passed to ``jetlib pretrain``.
        secret: name of the Secret with the store credentials (keys: ``SECRET_KEYS``).
        namespace: default: the pod's own namespace in a cluster, else the kubeconfig's.
        backend: ``trainjob`` (Kubeflow Trainer v2) or ``pytorchjob`` (Training Operator v1).
        timeout_s: wall-clock limit for the whole job (default 24 h).
        node_selector, tolerations: scheduling constraints for every pod; None (the default) with
            GPUs: :data:`GPU_NODE_SELECTOR` and :data:`GPU_TOLERATION`, as the pipeline's GPU steps
            (``{}`` and ``[]`` ask for none).
        poll_s: seconds between status polls.
        grace_s: how long a pod may stay in ErrImagePull / ImagePullBackOff /
            CreateContainerConfigError before the launch fails with that reason (default 45 s;
            CrashLoopBackOff, and a pod creation the API server refuses, fail it at the next poll).
        pending_s: how long a pod may stay Unschedulable, or its creation be refused for a reason
            that can clear (a quota), before the launch fails (default 15 min).
        runtime: the TrainingRuntime in ``namespace`` a TrainJob runs on; its node container must
            read the Secret's keys (``manifests/base/runtime`` ships ``jetlib-torch``).

    Returns:
        dict: the pretraining ``run.json`` (format :data:`jetlib.records.PRETRAIN`).

    Raises:
        ConfigError: a bad argument, a missing or unfit runtime, the service account lacks RBAC, or
            an admission webhook refused the job (exit 2), with the API server's message.
        TrainingError: the job failed, timed out or was cancelled (exit 4), with the reason.
        StoreError: the finished run cannot be read back (exit 3).
    """
    from jetlib.launch_watch import Cluster, wait_for

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be > 0, got {timeout_s}")
    for what, value in (("grace_s", grace_s), ("pending_s", pending_s)):
        if not value >= 0:
            raise ConfigError(f"{what} must be >= 0, got {value}")
    if gpus_per_node > 0:  # GPU workers go where the pipeline's own GPU steps go, unless told otherwise
        node_selector = dict(GPU_NODE_SELECTOR) if node_selector is None else node_selector
        tolerations = [dict(GPU_TOLERATION)] if tolerations is None else tolerations
    req = JobRequest(data=data, out=out, nodes=nodes, gpus_per_node=gpus_per_node, image=image, preset=preset,
                     augment=augment, extra_args=tuple(extra_args), secret=secret,
                     node_selector=dict(node_selector or {}), tolerations=tuple(tolerations or ()), runtime=runtime)
    req.check()  # bad arguments are reported before any cluster is contacted
    cluster = Cluster.connect(namespace)
    req = dataclasses.replace(req, namespace=cluster.namespace)
    name = job_name(out)
    job = cluster.job(backend, name)
    previous = _install_sigterm()
    done = False
    try:
        job.submit(req)
        wait_for(job, deadline=time.monotonic() + timeout_s, timeout_s=timeout_s, poll_s=poll_s, grace_s=grace_s,
                 pending_s=pending_s)
        done = True
    except BaseException as e:
        if not done:
            job.delete_quietly()
        if isinstance(e, Cancelled | KeyboardInterrupt):
            raise TrainingError(f"{job.kind} {req.namespace}/{name} cancelled; deleted it") from None
        raise
    finally:
        _restore_sigterm(previous)
    return _read_result(out)


def _read_result(out: str) -> dict:
    from jetlib import records

    _, run = records.read_run(out, "encoder", records.PRETRAIN, "--out")
    return run


def _install_sigterm():
    """Turn SIGTERM (what Kubernetes sends a cancelled step) into :class:`Cancelled` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def cancel(signum, frame):
        raise Cancelled()

    return signal.signal(signal.SIGTERM, cancel)


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
