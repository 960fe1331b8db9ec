"""The Kubernetes side of :mod:`jetlib.launch`: connect, submit, watch, explain, stream logs, delete.

One small handle class per backend (:class:`TrainJobHandle`, :class:`PyTorchJobHandle`) knows its
resource, its pods' labels and its node-0 container; :func:`wait_for` is the single watch loop over
either. Failure reasons are read from the pods (:func:`pod_problem`) and, for a TrainJob, from the
``FailedCreate`` events of its JobSet's Jobs (:func:`creation_problem`: a pod the API server refuses
never exists, so only the event says why), so that the one line a user sees says *why* (pod refused,
image pull, OOM-killed, unschedulable, missing Secret), not just "Failed" or a timeout days later.

How long each wait may last before it fails the launch (each a :func:`wait_for` argument):
a refused pod creation (``is invalid``, ``violates PodSecurity``) fails at the next poll; a crash loop
at once; an image pull or container-start failure after ``grace_s``; a pod ``Unschedulable`` (or a
creation refused for another reason, such as a quota) after ``pending_s``; the whole job after ``timeout_s``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path

from jetlib.errors import ConfigError, TrainingError

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Waiting reasons that do not clear by themselves; they fail the launch after grace_s.
STUCK = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
         "CreateContainerConfigError", "CreateContainerError"}
# A rank that crashes and restarts in place cannot rejoin torchrun's static rendezvous: its peers
# wait for it until their timeout. Such a pod fails the launch at once.
CRASHLOOP = "CrashLoopBackOff"
RBAC_HINT = "grant it with manifests/base/rbac (Role jetlib-launcher)"
MAX_API_ERRORS = 5  # consecutive failed polls tolerated (API server restarts, network blips)
# The apiserver's authorizer denial (k8s.io/apiserver, responsewriters/errors.go, forbiddenMessage):
# `... is forbidden: User "<name>" cannot <verb> resource ...`. Admission webhooks answer 403 too.
RBAC_DENIAL = re.compile(r'is forbidden: User "[^"]*" cannot ')
RESTART_ATTEMPT = "jobset.sigs.k8s.io/restart-attempt"  # JobSet labels each recreation of its pods
# A FailedCreate whose error says the pod itself is refused: the Job controller's retries will be
# refused the same way (validation, Pod Security admission), so the launch fails at once.
REFUSED = ("is invalid", "violates PodSecurity")


def _status_message(e: Exception) -> str:
    """The ``message`` of the Status object in an ApiException's body, or "" when there is none."""
    try:
        body = json.loads(getattr(e, "body", None) or "")
    except (TypeError, ValueError):
        return ""
    return " ".join(str(body.get("message", "")).split()) if isinstance(body, dict) else ""


def _api_error(e: Exception, what: str, namespace: str) -> Exception:
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

    def job(self, backend: str, name: str):
        return (TrainJobHandle if backend == "trainjob" else PyTorchJobHandle)(self, name)


class _Handle:
    """What the watch loop needs from a job; subclasses fill in the resource specifics."""

    kind = group = version = plural = ""
    pod_selector = ""
    container = ""

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
            raise _api_error(e, f"get {self.plural}.{self.group}", self.cluster.namespace) from None

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
            raise _api_error(e, "list pods", self.cluster.namespace) from None

    def submit(self, req) -> None:
        """Create the job; attach to a running or finished one of the same name; replace a failed one."""
        existing = self.get()
        if existing is not None:
            state, _ = self.state(existing)
            if state == "Deleting":  # a cancelled run's job still has terminating pods: a new one must wait
                print(f"{self.ref} is being deleted: waiting until it is gone", file=sys.stderr, flush=True)
                self._wait_gone(300.0)
                existing = None
        if existing is not None:
            if state != "Failed":
                print(f"{self.ref} exists ({state.lower()}): attaching to it", file=sys.stderr, flush=True)
                return
            print(f"{self.ref} failed before: re-submitting; it resumes from the newest checkpoint in {req.out}",
                  file=sys.stderr, flush=True)
            self.delete()
            self._wait_gone(120.0)
        self.create(req)
        print(f"submitted {self.ref}: {req.nodes} node(s) x {max(1, req.gpus_per_node)} process(es), "
              f"image {req.image}", file=sys.stderr, flush=True)

    def _wait_gone(self, timeout_s: float) -> None:
        """Wait until the object is gone: with foreground deletion that is after its pods are."""
        end = time.monotonic() + timeout_s
        while self.get() is not None:
            if time.monotonic() > end:
                raise TrainingError(f"{self.ref} still exists {timeout_s:g} s after deleting it")
            time.sleep(0.5)

    def delete(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.cluster.custom.delete_namespaced_custom_object(
                self.group, self.version, self.cluster.namespace, self.plural, self.name,
                propagation_policy="Foreground")
        except ApiException as e:
            if e.status != 404:
                raise _api_error(e, f"delete {self.plural}.{self.group}", self.cluster.namespace) from None

    def delete_quietly(self) -> None:
        """Best effort on the way out (cancel, timeout); says what happened in one line."""
        try:
            self.delete()
            print(f"deleted {self.ref}", file=sys.stderr, flush=True)
        except Exception as e:  # the original error matters more than a failed cleanup
            print(f"could not delete {self.ref}: {e}", file=sys.stderr, flush=True)

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


    def creation_events(self) -> list:
        """``FailedCreate`` events of the controllers that create this job's pods ([] where none is read)."""
        return []


class TrainJobHandle(_Handle):
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
            raise _api_error(e, "list jobs.batch and events", ns) from None

    def is_node0(self, labels: dict) -> bool:
        return (labels.get("jobset.sigs.k8s.io/replicatedjob-name") == "node"
                and labels.get("batch.kubernetes.io/job-completion-index") == "0")

    def create(self, req) -> None:
        """Through the kubeflow SDK: TrainerClient.train(CustomTrainerContainer, options)."""
        from kubeflow.common.types import KubernetesBackendConfig
        from kubeflow.trainer import TrainerClient
        from kubernetes.client.exceptions import ApiException

        from jetlib.launch import check_runtime, trainer, trainjob_options

        ns = self.cluster.namespace
        try:  # the runtime first: a clear line if it is missing or lacks the Secret
            runtime = self.cluster.custom.get_namespaced_custom_object(
                self.group, self.version, ns, "trainingruntimes", req.runtime)
        except ApiException as e:
            if e.status == 404:
                raise ConfigError(f"no TrainingRuntime {req.runtime!r} in namespace {ns}: apply "
                                  "manifests/base/runtime (make kind-up does), with Kubeflow Trainer v2.3.0 "
                                  "installed, or use backend='pytorchjob'") from None
            raise _api_error(e, "get trainingruntimes.trainer.kubeflow.org", ns) from None
        check_runtime(runtime, req.secret)
        client = TrainerClient(KubernetesBackendConfig(namespace=ns, client_configuration=self.cluster.configuration))
        try:
            client.train(runtime=req.runtime, trainer=trainer(req), options=trainjob_options(req, self.name))
        except (RuntimeError, TimeoutError) as e:
            cause = e.__cause__
            if isinstance(cause, ApiException):
                what = "get trainingruntimes.trainer.kubeflow.org" if "untime" in str(e) \
                    else "create trainjobs.trainer.kubeflow.org"
                raise _api_error(cause, what, ns) from None
            raise TrainingError(f"could not create {self.ref}: {e}") from None


class PyTorchJobHandle(_Handle):
    kind, group, version, plural = "PyTorchJob", "kubeflow.org", "v1", "pytorchjobs"
    pod_selector = "training.kubeflow.org/job-name={name}"
    container = "pytorch"
    terminal = {"Succeeded": "Complete", "Failed": "Failed"}

    def is_node0(self, labels: dict) -> bool:
        return (labels.get("training.kubeflow.org/replica-type", "").lower() == "master"
                and labels.get("training.kubeflow.org/replica-index", "0") == "0")

    def create(self, req) -> None:
        from kubernetes.client.exceptions import ApiException

        from jetlib.launch import pytorchjob_body

        try:
            self.cluster.custom.create_namespaced_custom_object(
                self.group, self.version, self.cluster.namespace, self.plural, pytorchjob_body(req, self.name))
        except ApiException as e:
            if e.status == 404:
                raise ConfigError("no PyTorchJob resource (kubeflow.org/v1) on this cluster: install the "
                                  "Training Operator v1 or use backend='trainjob'") from None
            raise _api_error(e, f"create {self.plural}.{self.group}", self.cluster.namespace) from None


def creation_problem(event, pending_s: float) -> tuple[str, str, float]:
    """(key, one line naming the Job and the reason, seconds before it fails the launch) of a
    ``FailedCreate`` event: 0 for a pod the API server refuses as such (:data:`REFUSED`), ``pending_s``
    for a refusal that can clear (a quota, a webhook that timed out)."""
    obj = event.involved_object
    message = " ".join((event.message or "").split())
    line = f"{obj.kind} {obj.namespace}/{obj.name}: {event.reason}: {message}"
    return f"{obj.uid}/{message}", line, (0.0 if any(r in message for r in REFUSED) else pending_s)


def pod_problem(pod, grace_s: float = 45.0, pending_s: float = 900.0) -> tuple[str, float | None] | None:
    """(one line saying why a pod is not making progress, seconds before that fails the launch), or None.

    The seconds are None for what clears by itself (OOM-killed and retried), 0 for a crash loop (its
    peers are already hung), ``grace_s`` for what does not clear (image pull, missing Secret), and
    ``pending_s`` for a pod no node fits (a cluster autoscaler may still add one).

    Reads what the kubelet and scheduler report: container waiting/terminated reasons
    (image pull, crash loop, OOM-killed, missing Secret) and the PodScheduled condition (unschedulable).
    """
    name = pod.metadata.name
    status = pod.status
    if status is None:
        return None
    for c in (status.init_container_statuses or []) + (status.container_statuses or []):
        waiting = c.state.waiting if c.state else None
        if waiting and waiting.reason == CRASHLOOP:
            last = c.last_state.terminated if c.last_state else None
            code = f", last exit code {last.exit_code}" if last and last.exit_code is not None else ""
            return (f"pod {name}: container {c.name} is crash-looping ({CRASHLOOP}, {c.restart_count} "
                    f"restart(s){code}); a rank restarted in place hangs its peers, so the job is stopped"), 0.0
        if waiting and waiting.reason in STUCK:
            what = "image pull failed" if "Image" in waiting.reason else "container cannot start"
            return f"pod {name}: {what} ({waiting.reason}) for {c.image}: {waiting.message or ''}".rstrip(": "), grace_s
        for term in (c.state.terminated if c.state else None, c.last_state.terminated if c.last_state else None):
            if term and term.reason == "OOMKilled":
                return (f"pod {name}: container {c.name} was OOM-killed (exit {term.exit_code}); "
                        "raise the memory limit or lower --batch-size"), None
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return f"pod {name}: unschedulable: {cond.message or 'no node fits'}", pending_s
    return None


def restarts(pod) -> int:
    """How often the job's container in ``pod`` has restarted (0 when it has no status yet)."""
    for c in (pod.status.container_statuses if pod.status else None) or []:
        return c.restart_count or 0
    return 0


def stream_logs(handle: _Handle, pod_name: str, prefix: str = "[node-0] ") -> threading.Thread:
    """Copy a pod's log to stdout line by line, in a daemon thread, until the container ends.

    ``follow`` ends with the container; after a restart the watch loop starts a new stream, which
    reads the new container's log from its start.
    """

    def run():
        try:
            resp = handle.cluster.core.read_namespaced_pod_log(
                pod_name, handle.cluster.namespace, container=handle.container, follow=True,
                _preload_content=False)
            for line in resp:
                print(prefix + line.decode(errors="replace").rstrip("\n"), flush=True)
        except Exception as e:  # logs are a convenience: never fail the launch over them
            print(f"log stream of {pod_name} ended: {e}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=run, name=f"logs-{pod_name}", daemon=True)
    thread.start()
    return thread


def wait_for(handle: _Handle, *, deadline: float, timeout_s: float, poll_s: float, grace_s: float,
             pending_s: float = 900.0) -> None:
    """Poll until the job completes; raise TrainingError with the reason when it fails, stalls or times out."""
    streams: dict[tuple[str, int], threading.Thread] = {}  # (pod, container restarts) -> its log stream
    first_seen: dict[tuple[str, str], float] = {}
    last_problem = ""
    errors = 0
    while True:
        try:
            state, message = handle.state()
            pods = handle.pods()
            refused = handle.creation_events()
            errors = 0
        except TrainingError:
            errors += 1  # transient API trouble: retry a few polls before giving up
            if errors >= MAX_API_ERRORS:
                raise
            time.sleep(poll_s)
            continue
        node0 = handle.node0(pods)
        if node0 is not None and node0.status and node0.status.phase in ("Running", "Succeeded", "Failed"):
            key = (node0.metadata.name, restarts(node0))
            if key not in streams:
                streams[key] = stream_logs(handle, node0.metadata.name)
        now = time.monotonic()
        found_all = [creation_problem(e, pending_s) for e in refused]
        found_all += [(pod.metadata.name, *found) for pod in pods
                      if (found := pod_problem(pod, grace_s, pending_s)) is not None]
        for name, line, fails_after in found_all:
            key = (name, line)
            if key not in first_seen:
                first_seen[key] = now
                print(line, file=sys.stderr, flush=True)
            last_problem = line
            if fails_after is not None and now - first_seen[key] >= fails_after:
                waited = f" (for more than {fails_after:g} s)" if fails_after else ""
                raise TrainingError(f"{handle.ref}: {line}{waited}")
        if state in ("Complete", "Failed", "Gone", "Deleting"):
            for t in streams.values():
                t.join(timeout=30)  # let the last lines of node 0's log arrive
        if state == "Complete":
            return
        if state in ("Failed", "Gone", "Deleting"):
            why = "; ".join(x for x in (message, last_problem) if x)
            raise TrainingError(f"{handle.ref} failed: {why or 'no reason reported'}")
        if now >= deadline:
            hint = f" (last problem: {last_problem})" if last_problem else ""
            raise TrainingError(f"{handle.ref} did not finish within {timeout_s:g} s{hint}; deleting it")
        time.sleep(max(0.0, min(poll_s, deadline - now)))
