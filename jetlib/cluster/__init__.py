"""Multi-node pretraining on Kubernetes: a TrainJob (Kubeflow Trainer v2) or a PyTorchJob (Training Operator v1).

Four modules, each importing only the ones above it in this list (``tests/test_cluster_imports.py``
checks it, function-level imports included):

- :mod:`jetlib.cluster.spec`: what a job is, the :class:`JobRequest` and the objects sent for it; no API call.
- :mod:`jetlib.cluster.watch`: what each poll of a submitted job sees, and when that fails the launch.
- :mod:`jetlib.cluster.jobs`: the job on the API server (connect, create, read, list, delete), built from spec.
- :mod:`jetlib.cluster.launch`: :func:`launch_pretrain`, which orders them: submit, wait, clean up, read back.

How a user runs it, and what each failure looks like: docs/clusters.md; the upstream rules each
choice follows: docs/cluster-readings.md.
"""

from jetlib.cluster.jobs import Cluster, JobHandle, PyTorchJobHandle, TrainJobHandle, api_error
from jetlib.cluster.launch import TIMEOUT_S, Cancelled, launch_pretrain
from jetlib.cluster.spec import (
    BACKENDS,
    CPU_PER_GPU,
    GPU_NODE_SELECTOR,
    GPU_TOLERATION,
    MEMORY_GI_PER_GPU,
    RUNTIME,
    SECRET_KEYS,
    UID,
    JobRequest,
    check_runtime,
    job_name,
    pod_parts,
    pytorchjob_body,
    resources_per_node,
    secret_env,
    trainer,
    trainer_command,
    trainjob_options,
)
from jetlib.cluster.watch import GRACE_S, PENDING_S, creation_problem, pod_problem, wait_for

__all__ = [
    "BACKENDS", "CPU_PER_GPU", "GPU_NODE_SELECTOR", "GPU_TOLERATION", "GRACE_S", "MEMORY_GI_PER_GPU", "PENDING_S",
    "RUNTIME", "SECRET_KEYS", "TIMEOUT_S", "UID", "Cancelled", "Cluster", "JobHandle", "JobRequest",
    "PyTorchJobHandle", "TrainJobHandle", "api_error", "check_runtime", "creation_problem", "job_name",
    "launch_pretrain", "pod_parts", "pod_problem", "pytorchjob_body", "resources_per_node", "secret_env",
    "trainer", "trainer_command", "trainjob_options", "wait_for",
]
