"""Multi-node pretraining on Kubernetes: submit, stream node 0's log, wait, read the result back.

The pretrain KFP component calls :func:`launch_pretrain` (through :func:`jetlib.placement.pretrain_step`)
when a run asks for more than one node. What the job is comes from :mod:`jetlib.cluster.spec`, the
API calls from :mod:`jetlib.cluster.jobs`, when it has failed from :mod:`jetlib.cluster.watch`; this
module orders them: check the request, attach to or (re)submit the job, wait for it, delete it on
a failure, a timeout or a cancel, and read the finished ``run.json`` back from the store.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time

from jetlib import records
from jetlib.cluster.jobs import Cluster, JobHandle
from jetlib.cluster.spec import BACKENDS, GPU_NODE_SELECTOR, GPU_TOLERATION, RUNTIME, JobRequest, job_name
from jetlib.cluster.watch import GRACE_S, PENDING_S, wait_for
from jetlib.errors import ConfigError, TrainingError

TIMEOUT_S = 24 * 3600.0  # the whole job (docs/cluster-readings.md)
DELETING_WAIT_S = 300.0  # a cancelled run's job, its pods still terminating, before a new one may start
REPLACE_WAIT_S = 120.0  # a failed job, deleted to be re-submitted


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
        submit(job, req)
        wait_for(job, deadline=time.monotonic() + timeout_s, timeout_s=timeout_s, poll_s=poll_s, grace_s=grace_s,
                 pending_s=pending_s)
        done = True
    except BaseException as e:
        if not done:
            delete_quietly(job)
        if isinstance(e, Cancelled | KeyboardInterrupt):
            raise TrainingError(f"{job.kind} {req.namespace}/{name} cancelled; deleted it") from None
        raise
    finally:
        _restore_sigterm(previous)
    _, run = records.read_run(out, "encoder", records.PRETRAIN, "--out")
    return run


def submit(job: JobHandle, req: JobRequest) -> None:
    """Create the job; attach to a running or finished one of the same name; replace a failed one."""
    existing = job.get()
    if existing is not None:
        state, _ = job.state(existing)
        if state == "Deleting":  # a cancelled run's job still has terminating pods: a new one must wait
            print(f"{job.ref} is being deleted: waiting until it is gone", file=sys.stderr, flush=True)
            _wait_gone(job, DELETING_WAIT_S)
            existing = None
    if existing is not None:
        if state != "Failed":
            print(f"{job.ref} exists ({state.lower()}): attaching to it", file=sys.stderr, flush=True)
            return
        print(f"{job.ref} failed before: re-submitting; it resumes from the newest checkpoint in {req.out}",
              file=sys.stderr, flush=True)
        job.delete()
        _wait_gone(job, REPLACE_WAIT_S)
    job.create(req)
    print(f"submitted {job.ref}: {req.nodes} node(s) x {max(1, req.gpus_per_node)} process(es), "
          f"image {req.image}", file=sys.stderr, flush=True)


def _wait_gone(job: JobHandle, timeout_s: float) -> None:
    """Wait until the object is gone: with foreground deletion that is after its pods are."""
    end = time.monotonic() + timeout_s
    while job.get() is not None:
        if time.monotonic() > end:
            raise TrainingError(f"{job.ref} still exists {timeout_s:g} s after deleting it")
        time.sleep(0.5)


def delete_quietly(job: JobHandle) -> None:
    """Best effort on the way out (cancel, timeout); says what happened in one line."""
    try:
        job.delete()
        print(f"deleted {job.ref}", file=sys.stderr, flush=True)
    except Exception as e:  # the original error matters more than a failed cleanup
        print(f"could not delete {job.ref}: {e}", file=sys.stderr, flush=True)


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
