"""A pretraining job on the Kubernetes API server: connect, create, read, list its pods and events, delete.

:class:`Cluster` is the API client and the namespace jobs go to; one small handle class per backend
(:class:`TrainJobHandle`, :class:`PyTorchJobHandle`) knows its resource, its pods' labels and its
node-0 container, and creates its job from a :class:`jetlib.cluster.spec.JobRequest`. Every call the
API server refuses becomes one line with the server's own message (:func:`api_error`). Deciding when
a job has failed is :mod:`jetlib.cluster.watch`'s; submitting, waiting and cleaning up are
:mod:`jetlib.cluster.launch`'s.

The ``kubernetes`` client and the ``kubeflow`` SDK are imported inside the methods that call them,
so that importing :mod:`jetlib.cluster` (the pipeline does, for :data:`jetlib.cluster.spec.UID`) costs
neither.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from jetlib.cluster.spec import JobRequest, check_runtime, pytorchjob_body, trainer, trainjob_options
from jetlib.errors import ConfigError, TrainingError

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
RBAC_HINT = "grant it with manifests/base/rbac (Role jetlib-launcher)"
# The apiserver's authorizer denial (k8s.io/apiserver, responsewriters/errors.go, forbiddenMessage):
# `... is forbidden: User "<name>" cannot <verb> resource ...`. Admission webhooks answer 403 too.
RBAC_DENIAL = re.compile(r'is forbidden: User "[^"]*" cannot ')
RESTART_ATTEMPT = "jobset.sigs.k8s.io/restart-attempt"  # JobSet labels each recreation of its pods


def _status_message(e: Exception) -> str:
    """The ``message`` of the Status object in an ApiException's body, or "" when there is none."""
    try:
        body = json.loads(getattr(e, "body", None) or "")
    except (TypeError, ValueError):
        return ""
    return " ".join(str(body.get("message", "")).split()) if isinstance(body, dict) else ""


def api_error(e: Exception, what: str, namespace: str) -> Exception:
    """A JetlibError for an API failure, with the API server's own message.

    A 403 is an RBAC denial only when the message is the authorizer's; an admission webhook's
    refusal (also 403, "admission webhook ... denied the request: ...") or a policy's is shown as is.
    """
    status = getattr(e, "status", None)
    message = _status_message(e)
    if status == 403 and RBAC_DENIAL.search(message):
        return ConfigError(f"RBAC denied: this service account cannot {what} in namespace {namespace}; "
                           f"{RBAC_HINT} ({message})")
    if status in (400, 403, 409, 422):  # the request itself was refused: retrying cannot help
        return ConfigError(f"the API server refused to {what} in namespace {namespace} ({status}): "
                           f"{message or getattr(e, 'reason', '')}")
    if status == 401:
        return ConfigError(f"Kubernetes API refused the credentials (401) to {what}")
    reason = message or getattr(e, "reason", None) or type(e).__name__
    return TrainingError(f"Kubernetes API error while trying to {what} in namespace {namespace}: "
                         f"{status or ''} {reason}".replace("  ", " "))


class Cluster:
    """An API client configuration plus the namespace jobs go to."""

    def __init__(self, configuration, namespace: str):
        from kubernetes import client

        self.configuration = configuration
        self.namespace = namespace
        api = client.ApiClient(configuration)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    @classmethod
    def connect(cls, namespace: str | None = None) -> Cluster:
        """In a pod: its service account and namespace; elsewhere: ``$KUBECONFIG`` / ``~/.kube/config``."""
        from kubernetes import client, config

        cfg = client.Configuration()
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=cfg)
                default_ns = SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.exists() else "default"
            else:
                # The client reads $KUBECONFIG once, at import; read it now so a changed one counts.
                path = os.environ.get("KUBECONFIG") or None
                config.load_kube_config(config_file=path, client_configuration=cfg)
                _, active = config.list_kube_config_contexts(config_file=path)
                default_ns = (active or {}).get("context", {}).get("namespace") or "default"
        except config.ConfigException as e:
            raise ConfigError(f"no Kubernetes configuration (in-cluster or kubeconfig): {e}") from None
        return cls(cfg, namespace or default_ns)

    def job(self, backend: str, name: str) -> JobHandle:
        return (TrainJobHandle if backend == "trainjob" else PyTorchJobHandle)(self, name)


class JobHandle:
    """One job by name: what the launcher and the watch loop ask of it; subclasses fill in the resource."""

    kind = group = version = plural = ""
    pod_selector = ""
    container = ""
    terminal: dict[str, str] = {}  # a True condition's type -> "Complete" | "Failed"

    def __init__(self, cluster: Cluster, name: str):
        self.cluster, self.name = cluster, name
        self.ref = f"{self.kind} {cluster.namespace}/{name}"

    def get(self) -> dict | None:
        """The job object, or None if there is none."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.cluster.custom.get_namespaced_custom_object(
                self.group, self.version, self.cluster.namespace, self.plural, self.name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise api_error(e, f"get {self.plural}.{self.group}", self.cluster.namespace) from None

    def state(self, obj: dict | None = None) -> tuple[str, str]:
        """("Complete" | "Failed" | "Running" | "Deleting" | "Gone", message) from the job object.

        A foreground delete leaves the object, with a ``deletionTimestamp``, until its pods are gone.
        """
        obj = self.get() if obj is None else obj
        if obj is None:
            return "Gone", "the job was deleted"
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return "Deleting", "the job is being deleted"
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("status") == "True" and c.get("type") in self.terminal:
                detail = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
                return self.terminal[c["type"]], detail
        return "Running", ""

    def pods(self) -> list:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.cluster.core.list_namespaced_pod(
                self.cluster.namespace, label_selector=self.pod_selector.format(name=self.name)).items
        except ApiException as e:
            raise api_error(e, "list pods", self.cluster.namespace) from None

    def create(self, req: JobRequest) -> None:
        raise NotImplementedError

    def delete(self) -> None:
        """Delete the job in the foreground (its pods first); a job already gone is no error."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.cluster.custom.delete_namespaced_custom_object(
                self.group, self.version, self.cluster.namespace, self.plural, self.name,
                propagation_policy="Foreground")
        except ApiException as e:
            if e.status != 404:
                raise api_error(e, f"delete {self.plural}.{self.group}", self.cluster.namespace) from None

    def is_node0(self, labels: dict) -> bool:
        raise NotImplementedError

    def node0(self, pods: list):
        """Node 0's current pod: not terminating, of the newest restart attempt, the newest created.

        After a JobSet restart or a replacement the old pod can still be listed (terminating) beside
        the new one; the list order means nothing.
        """
        live = [p for p in pods if self.is_node0(p.metadata.labels or {}) and not p.metadata.deletion_timestamp]

        def newest(p):
            attempt = (p.metadata.labels or {}).get(RESTART_ATTEMPT, "0")
            return (int(attempt) if attempt.isdigit() else 0, p.metadata.creation_timestamp or 0)
        return max(live, key=newest, default=None)

    def log_lines(self, pod_name: str) -> Iterator[str]:
        """The job container's log in ``pod_name``, line by line as it is written, until the container ends."""
        resp = self.cluster.core.read_namespaced_pod_log(
            pod_name, self.cluster.namespace, container=self.container, follow=True, _preload_content=False)
        for line in resp:
            yield line.decode(errors="replace").rstrip("\n")

    def creation_events(self) -> list:
        """``FailedCreate`` events of the controllers that create this job's pods ([] where none is read)."""
        return []


class TrainJobHandle(JobHandle):
    kind, group, version, plural = "TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs"
    pod_selector = "jobset.sigs.k8s.io/jobset-name={name}"
    container = "node"
    terminal = {"Complete": "Complete", "Failed": "Failed"}
    _events_denied = False

    def creation_events(self) -> list:
        """``FailedCreate`` events on this TrainJob's batch Jobs (JobSet labels them with its name), by the
        Job's uid so that events of an earlier job of the same name do not count."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        if self._events_denied:
            return []
        ns = self.cluster.namespace
        try:
            jobs = client.BatchV1Api(self.cluster.core.api_client).list_namespaced_job(
                ns, label_selector=self.pod_selector.format(name=self.name)).items
            events = []
            for job in jobs:
                events += self.cluster.core.list_namespaced_event(
                    ns, field_selector=f"involvedObject.uid={job.metadata.uid},reason=FailedCreate").items
            return events
        except ApiException as e:
            if e.status == 403:  # a launcher Role from before events were read: watch the pods only
                self._events_denied = True
                print(f"cannot list jobs.batch or events in namespace {ns} ({RBAC_HINT}): a pod the API server "
                      "refuses shows only as the timeout", file=sys.stderr, flush=True)
                return []
            raise api_error(e, "list jobs.batch and events", ns) from None

    def is_node0(self, labels: dict) -> bool:
        return (labels.get("jobset.sigs.k8s.io/replicatedjob-name") == "node"
                and labels.get("batch.kubernetes.io/job-completion-index") == "0")

    def create(self, req: JobRequest) -> None:
        """Through the kubeflow SDK: TrainerClient.train(CustomTrainerContainer, options)."""
        from kubeflow.common.types import KubernetesBackendConfig
        from kubeflow.trainer import TrainerClient
        from kubernetes.client.exceptions import ApiException

        ns = self.cluster.namespace
        try:  # the runtime first: a clear line if it is missing or lacks the Secret
            runtime = self.cluster.custom.get_namespaced_custom_object(
                self.group, self.version, ns, "trainingruntimes", req.runtime)
        except ApiException as e:
            if e.status == 404:
                raise ConfigError(f"no TrainingRuntime {req.runtime!r} in namespace {ns}: apply "
                                  "manifests/base/runtime (make kind-up does), with Kubeflow Trainer v2.3.0 "
                                  "installed, or use backend='pytorchjob'") from None
            raise api_error(e, "get trainingruntimes.trainer.kubeflow.org", ns) from None
        check_runtime(runtime, req.secret)
        client = TrainerClient(KubernetesBackendConfig(namespace=ns, client_configuration=self.cluster.configuration))
        try:
            client.train(runtime=req.runtime, trainer=trainer(req), options=trainjob_options(req, self.name))
        except (RuntimeError, TimeoutError) as e:
            cause = e.__cause__
            if isinstance(cause, ApiException):
                what = "get trainingruntimes.trainer.kubeflow.org" if "untime" in str(e) \
                    else "create trainjobs.trainer.kubeflow.org"
                raise api_error(cause, what, ns) from None
            raise TrainingError(f"could not create {self.ref}: {e}") from None


class PyTorchJobHandle(JobHandle):
    kind, group, version, plural = "PyTorchJob", "kubeflow.org", "v1", "pytorchjobs"
    pod_selector = "training.kubeflow.org/job-name={name}"
    container = "pytorch"
    terminal = {"Succeeded": "Complete", "Failed": "Failed"}

    def is_node0(self, labels: dict) -> bool:
        return (labels.get("training.kubeflow.org/replica-type", "").lower() == "master"
                and labels.get("training.kubeflow.org/replica-index", "0") == "0")

    def create(self, req: JobRequest) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.cluster.custom.create_namespaced_custom_object(
                self.group, self.version, self.cluster.namespace, self.plural, pytorchjob_body(req, self.name))
        except ApiException as e:
            if e.status == 404:
                raise ConfigError("no PyTorchJob resource (kubeflow.org/v1) on this cluster: install the "
                                  "Training Operator v1 or use backend='trainjob'") from None
            raise api_error(e, f"create {self.plural}.{self.group}", self.cluster.namespace) from None
