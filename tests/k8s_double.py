"""An HTTP test double of the Kubernetes API server with Kubeflow Trainer v2.3.0 installed.

It speaks the REST paths the ``kubernetes`` client and the ``kubeflow`` SDK use (custom objects,
pods, pod logs, config maps), keeps objects in memory, records every request, and applies what the
real cluster applies between a request and its answer, each from the upstream source named:

- RBAC denials: 403 ``Forbidden`` with the apiserver's message (k8s.io/apiserver v0.36,
  pkg/endpoints/handlers/responsewriters/errors.go, forbiddenMessage and ForbiddenStatusError).
- Admission: the Trainer's TrainJob and TrainingRuntime validating webhooks (tests/trainer_rules.py);
  a denial is 403 ``Forbidden`` (sigs.k8s.io/controller-runtime v0.24.1,
  pkg/webhook/admission/response.go, ValidationResponse) whose message the apiserver prefixes with
  ``admission webhook "<name>" denied the request: `` (k8s.io/apiserver v0.36,
  pkg/admission/plugin/webhook/errors/statuserror.go, ToStatusErr). The mutating TrainJob webhook
  stamps ``time`` on each runtime patch (pkg/webhooks/trainjob_webhook.go, TrainJobDefaulter).
- Deletion: ``propagationPolicy=Foreground`` leaves the object with a ``deletionTimestamp`` and the
  ``foregroundDeletion`` finalizer until its pods are gone (the garbage collector's foreground
  mode); a create of the same name meanwhile is 409 ``AlreadyExists``.
- Pod creation (``POST .../pods``, and the Job controller's creations when ``jobset_controller`` is on):
  the pod strategy first merges each affinity term's ``matchLabelKeys`` into its selector
  (k8s.io/kubernetes v1.33 pkg/registry/core/pod/strategy.go, mutatePodAffinity /
  applyMatchLabelKeysAndMismatchLabelKeys, gate MatchLabelKeysInPodAffinity on by default), then
  validation refuses a key found twice (pkg/apis/core/validation/validation.go,
  validateMatchLabelKeysAndMismatchLabelKeys): 422 ``Invalid``, ``Pod "<name>" is invalid: ...``
  (k8s.io/apimachinery pkg/api/errors, NewInvalid). The Job controller turns a refused creation into
  a ``FailedCreate`` Warning event on its Job, ``Error creating: <error>`` (pkg/controller/
  controller_utils.go, RealPodControl.createPods), and creates no pod.
- Lists: pods, batch/v1 Jobs and custom objects (Katib's Trials: the kubeflow SDK 0.5.0's
  ``KubernetesBackend.__get_trials_from_job`` lists them by ``katib.kubeflow.org/experiment=<name>``) by
  ``labelSelector`` (``k=v`` terms), as a ``<Kind>List``; Events by ``fieldSelector`` over
  the fields pkg/registry/core/event/strategy.go ToSelectableFields declares (``involvedObject.*``,
  ``reason``, ``type``, ...); any other field is 400 ``field label not supported`` (as the apiserver).

A test scripts the rest: which requests are forbidden, what the pods report, what node 0 logs, and
when the job's conditions change (``script(fake, job)`` runs on every GET of a job object).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml

from tests.trainer_rules import (
    RUNTIME_WEBHOOK,
    TRAINJOB_WEBHOOK,
    _invalid,
    aggregate,
    node_pod,
    validate_trainingruntime,
    validate_trainjob,
)

ROOT = Path(__file__).resolve().parents[1]
JETLIB_RUNTIME_FILE = ROOT / "manifests" / "base" / "runtime" / "trainingruntime.yaml"
STOCK_RUNTIME = {  # Kubeflow Trainer v2.3.0 manifests/base/runtimes/torch_distributed.yaml
    "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
    "metadata": {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}},
    "spec": {"mlPolicy": {"numNodes": 1, "torch": {}},
             "template": {"spec": {"replicatedJobs": [{"name": "node", "template": {
                 "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                 "spec": {"template": {"spec": {"containers": [{
                     "name": "node", "image": "pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime"}]}}}}}]}}},
}
CUSTOM = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)(?:/namespaces/(?P<ns>[^/]+))?"
                    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<log>/log)?)?$")
CONFIGMAP = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/configmaps/(?P<name>[^/]+)$")
EVENTS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/events$")
BATCH_JOBS = re.compile(r"^/apis/batch/v1/namespaces/(?P<ns>[^/]+)/jobs$")
EVENT_FIELDS = ("metadata.name", "metadata.namespace", "involvedObject.kind", "involvedObject.namespace",
                "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion",
                "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "reportingComponent",
                "source", "type")
VERBS = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}
NOW = "2026-01-01T00:00:00Z"


def jetlib_runtime(namespace: str = "ml") -> dict:
    """jetlib's TrainingRuntime as ``kubectl apply`` leaves it in ``namespace``."""
    obj = yaml.safe_load(JETLIB_RUNTIME_FILE.read_text())
    obj["metadata"]["namespace"] = namespace
    return obj


def pod(name: str, labels: dict, phase: str = "Running", waiting: str | None = None, oom: bool = False,
        unschedulable: bool = False, restarts: int = 0, created: str = NOW, deleting: bool = False) -> dict:
    """A pod as the API server returns it, with the status fields the launcher reads."""
    state = {"running": {"startedAt": created}}
    last = {}
    if waiting:
        message = ("back-off 40s restarting failed container=node" if waiting == "CrashLoopBackOff"
                   else f"Back-off pulling image (test: {waiting})")
        state = {"waiting": {"reason": waiting, "message": message}}
    if oom:
        state = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    if restarts:
        last = {"terminated": {"reason": "Error", "exitCode": 1, "finishedAt": created}}
    status = {"phase": phase, "containerStatuses": [{
        "name": "node", "image": "jetlib:0.1.0", "imageID": "", "ready": phase == "Running",
        "restartCount": restarts, "state": state, "lastState": last,
        "containerID": f"containerd://{name}-{restarts}"}]}
    if unschedulable:
        status = {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}
    meta = {"name": name, "namespace": "ml", "labels": labels, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}


def _terms(affinity: dict):
    """(field path, term) of every pod (anti-)affinity term, as validation walks them."""
    for kind in ("podAffinity", "podAntiAffinity"):
        section = affinity.get(kind) or {}
        base = f"spec.affinity.{kind}"
        for i, term in enumerate(section.get("requiredDuringSchedulingIgnoredDuringExecution") or []):
            yield f"{base}.requiredDuringSchedulingIgnoredDuringExecution[{i}]", term
        for i, weighted in enumerate(section.get("preferredDuringSchedulingIgnoredDuringExecution") or []):
            yield (f"{base}.preferredDuringSchedulingIgnoredDuringExecution[{i}].podAffinityTerm",
                   weighted.get("podAffinityTerm") or {})


def mutate_pod_affinity(pod: dict) -> None:
    """pkg/registry/core/pod/strategy.go (v1.33), mutatePodAffinity: each term's matchLabelKeys become
    ``key In (<this pod's value>)`` and mismatchLabelKeys ``key NotIn (...)`` in its labelSelector, for
    keys the pod carries; a term without a labelSelector is left alone (it matches nothing)."""
    labels = pod["metadata"].get("labels") or {}
    for _, term in _terms(pod["spec"].get("affinity") or {}):
        if term.get("labelSelector") is None:
            continue
        exprs = term["labelSelector"].setdefault("matchExpressions", [])
        for field, op in (("matchLabelKeys", "In"), ("mismatchLabelKeys", "NotIn")):
            exprs += [{"key": k, "operator": op, "values": [labels[k]]} for k in term.get(field) or [] if k in labels]


def validate_pod_affinity(pod: dict) -> list[str]:
    """pkg/apis/core/validation/validation.go (v1.33), validateMatchLabelKeysAndMismatchLabelKeys, on a
    pod already through :func:`mutate_pod_affinity`: a matchLabelKeys key that the selector holds
    twice (the user's own term and the merged one) is refused, at the term's path indexed by the key's
    position (``fldPath.Index(i)``), as is a key in both matchLabelKeys and mismatchLabelKeys."""
    errors = []
    for path, term in _terms(pod["spec"].get("affinity") or {}):
        match, mismatch = term.get("matchLabelKeys") or [], term.get("mismatchLabelKeys") or []
        selector = term.get("labelSelector")
        if (match or mismatch) and selector is None:
            errors.append(f"{path}.matchLabelKeys: Forbidden: must not be specified when labelSelector is not set")
            continue
        if selector is not None:
            index = {k: i for i, k in enumerate(match)}
            seen = set(selector.get("matchLabels") or {})
            for expr in selector.get("matchExpressions") or []:
                if expr["key"] in index and expr["key"] in seen:
                    errors.append(_invalid(f"{path}[{index[expr['key']]}]", expr["key"],
                                           "exists in both matchLabelKeys and labelSelector"))
                seen.add(expr["key"])
        for i, k in enumerate(match):
            if k in mismatch:
                errors.append(_invalid(f"{path}.matchLabelKeys[{i}]", k,
                                       "exists in both matchLabelKeys and mismatchLabelKeys"))
    return errors


def _selected(fields: dict, selector: str) -> bool:
    """``a=b,c!=d`` against an object's selectable fields (k8s.io/apimachinery pkg/fields)."""
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if fields.get(key, "") == value:
                return False
        else:
            key, value = term.replace("==", "=").split("=", 1)
            if fields.get(key, "") != value:
                return False
    return True


def _event_fields(event: dict) -> dict:
    obj = event["involvedObject"]
    return {"metadata.name": event["metadata"]["name"], "metadata.namespace": event["metadata"]["namespace"],
            **{f"involvedObject.{k}": str(obj.get(k, "")) for k in
               ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
            "reason": event["reason"], "reportingComponent": event.get("reportingComponent", ""),
            "source": (event.get("source") or {}).get("component", ""), "type": event["type"]}


class FakeKubernetes:
    """State and behaviour of the double."""

    def __init__(self, namespace: str = "ml"):
        self.objects: dict[tuple[str, str, str], dict] = {
            ("trainingruntimes", namespace, "jetlib-torch"): jetlib_runtime(namespace),
            ("clustertrainingruntimes", "", "torch-distributed"): copy.deepcopy(STOCK_RUNTIME)}
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[dict] = []  # bodies of created TrainJobs / PyTorchJobs, as sent
        self.denied: list[str] = []  # messages of admission denials, in order
        self.forbid: set[tuple[str, str]] = set()  # (METHOD, plural) that RBAC denies
        self.pods: list[dict] = []
        self.logs: dict[str, str | list[str]] = {}  # pod name -> log, or one log per container restart
        self.job_gets = 0
        self.script = None
        self.batch_jobs: list[dict] = []  # batch/v1 Jobs (JobSet makes one per replicated job)
        self.events: list[dict] = []
        # On: a created TrainJob gets its Job and the Job controller's pod creations (see create_pod).
        self.jobset_controller = False
        self.deletion_ticks = 3  # requests a foreground delete takes to finish (pods terminating)
        self._deleting: dict[tuple[str, str, str], int] = {}
        self.lock = threading.RLock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path, namespace: str = "ml") -> str:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "double",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "tester",
                                                        "namespace": namespace}}]}))
        return str(path)

    def calls(self, method: str, plural: str) -> int:
        return sum(1 for m, p in self.requests if m == method and f"/{plural}" in p)

    def jobs(self, plural: str = "trainjobs") -> dict[str, dict]:
        return {n: o for (pl, _, n), o in self.objects.items() if pl == plural}

    def set_condition(self, plural: str, name: str, ctype: str, reason: str = "", message: str = "") -> None:
        for (pl, _, n), obj in self.objects.items():
            if pl == plural and n == name:
                obj.setdefault("status", {})["conditions"] = [
                    {"type": ctype, "status": "True", "reason": reason, "message": message,
                     "lastTransitionTime": NOW}]

    def create_pod(self, pod: dict) -> list[str]:
        """Admit ``pod`` as the API server does (strategy, then validation); the errors, or [] and stored."""
        pod = copy.deepcopy(pod)
        mutate_pod_affinity(pod)
        errors = validate_pod_affinity(pod)
        if not errors:
            pod["metadata"].setdefault("namespace", "ml")
            pod["metadata"].setdefault("creationTimestamp", NOW)
            pod["status"] = {"phase": "Pending"}
            self.pods.append(pod)
        return errors

    def event(self, involved: dict, reason: str, message: str, component: str, kind: str = "Warning") -> dict:
        """Record an Event as client-go's recorder does: a repeat of the same one bumps ``count``."""
        for e in self.events:
            if e["involvedObject"]["uid"] == involved["uid"] and (e["reason"], e["message"]) == (reason, message):
                e["count"] += 1
                return e
        e = {"apiVersion": "v1", "kind": "Event",
             "metadata": {"name": f"{involved['name']}.{len(self.events):016x}", "namespace": involved["namespace"]},
             "involvedObject": involved, "reason": reason, "message": message, "type": kind, "count": 1,
             "firstTimestamp": NOW, "lastTimestamp": NOW, "source": {"component": component},
             "reportingComponent": component}
        self.events.append(e)
        return e

    def _run_jobset(self, trainjob: dict) -> None:
        """JobSet's one Job for the ``node`` replicated job, then the Job controller's pod creations."""
        ns, name = trainjob["metadata"]["namespace"], trainjob["metadata"]["name"]
        ref = trainjob["spec"].get("runtimeRef") or {}
        runtime = self.objects.get(("trainingruntimes", ns, ref.get("name", ""))) if ref.get(
            "kind") == "TrainingRuntime" else self.objects.get(("clustertrainingruntimes", "", ref.get("name", "")))
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": f"{name}-node-0", "namespace": ns, "uid": f"job-uid-{len(self.batch_jobs)}",
                            "labels": {"jobset.sigs.k8s.io/jobset-name": name,
                                       "jobset.sigs.k8s.io/replicatedjob-name": "node"}}}
        self.batch_jobs.append(job)
        involved = {"kind": "Job", "namespace": ns, "name": job["metadata"]["name"], "uid": job["metadata"]["uid"],
                    "apiVersion": "batch/v1"}
        for index in range((trainjob["spec"].get("trainer") or {}).get("numNodes") or 1):
            pod = node_pod(trainjob, runtime, index)
            errors = self.create_pod(pod)
            if errors:
                self.event(involved, "FailedCreate", f'Error creating: Pod "{pod["metadata"]["name"]}" is invalid: '
                           f"{aggregate(errors)}", "job-controller")

    def _tick(self) -> None:
        """Advance foreground deletions: pods terminate, then the owner goes (called once per request)."""
        for key in list(self._deleting):
            self._deleting[key] -= 1
            if self._deleting[key] <= 0:
                del self._deleting[key]
                self.objects.pop(key, None)
                self.pods = [p for p in self.pods if not _owned(p, key[2])]
                self.batch_jobs = [j for j in self.batch_jobs if not _owned(j, key[2])]

    def _delete(self, key, policy: str) -> dict | None:
        obj = self.objects.get(key)
        if obj is None:
            return None
        if policy != "Foreground":
            self.objects.pop(key)  # background: the object goes now, the collector removes pods later
            return obj
        meta = obj["metadata"]
        if "deletionTimestamp" not in meta:
            meta["deletionTimestamp"] = NOW
            meta["finalizers"] = [*meta.get("finalizers", []), "foregroundDeletion"]
            for p in self.pods:
                if _owned(p, key[2]):
                    p["metadata"]["deletionTimestamp"] = NOW
            self._deleting[key] = self.deletion_ticks
        return obj

    def _admit(self, plural: str, ns: str, body: dict) -> tuple[str, str] | None:
        """(webhook, message) when the Trainer's webhooks deny ``body``; stamps patch times."""
        if plural == "trainingruntimes":
            errors = validate_trainingruntime(body)
            return (RUNTIME_WEBHOOK, aggregate(errors)) if errors else None
        if plural != "trainjobs":
            return None
        for patch in (body.get("spec") or {}).get("runtimePatches") or []:
            patch.setdefault("time", NOW)  # TrainJobDefaulter (mutating webhook)
        ref = body["spec"].get("runtimeRef") or {}
        kind = ref.get("kind", "ClusterTrainingRuntime")
        key = (("trainingruntimes", ns) if kind == "TrainingRuntime" else ("clustertrainingruntimes", "")) + (
            ref.get("name", ""),)
        runtime = self.objects.get(key)
        error = f'{key[0]}.trainer.kubeflow.org "{ref.get("name")}" not found'
        errors = validate_trainjob(body, runtime, error)
        return (TRAINJOB_WEBHOOK, aggregate(errors)) if errors else None

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, code: int, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str, details: dict | None = None):
                body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": message, "reason": reason, "code": code}
                if details:
                    body["details"] = details
                self._send(code, body)

            def _rbac(self, method: str, m, ns: str | None):
                """403 exactly as the apiserver's authorizer answers it (forbiddenMessage)."""
                verb = VERBS.get(method) or ("get" if m["name"] else "list")
                scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
                resource = f'{m["plural"]}.{m["group"]}' if m["group"] else m["plural"]
                target = f'{resource} "{m["name"]}"' if m["name"] and method != "POST" else resource
                user = "system:serviceaccount:ml:pipeline-runner"
                self._status(403, "Forbidden", f'{target} is forbidden: User "{user}" cannot {verb} resource '
                             f'"{m["plural"]}" in API group "{m["group"]}" {scope}',
                             {"name": m["name"] or "", "group": m["group"], "kind": m["plural"]})

            def _route(self, method: str):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with fake.lock:
                    fake.requests.append((method, url.path))
                    fake._tick()
                if m := CONFIGMAP.match(url.path):
                    if m["name"] == "kubeflow-trainer-public":
                        return self._send(200, {"apiVersion": "v1", "kind": "ConfigMap",
                                                "metadata": {"name": m["name"], "namespace": m["ns"]},
                                                "data": {"kubeflow_trainer_version": "v2.3.0"}})
                    return self._status(404, "NotFound", f'configmaps "{m["name"]}" not found')
                if m := PODS.match(url.path):
                    if method == "POST":
                        with fake.lock:
                            errors = fake.create_pod({**body, "metadata": {**body["metadata"], "namespace": m["ns"]}})
                        if errors:
                            return self._status(422, "Invalid", f'Pod "{body["metadata"]["name"]}" is invalid: '
                                                f"{aggregate(errors)}")
                        return self._send(201, fake.pods[-1])
                    return self._pods(m, query)
                if m := BATCH_JOBS.match(url.path):
                    if ("GET", "jobs") in fake.forbid:
                        return self._rbac("GET", {"plural": "jobs", "group": "batch", "name": None}, m["ns"])
                    with fake.lock:
                        items = [copy.deepcopy(j) for j in fake.batch_jobs if j["metadata"]["namespace"] == m["ns"]
                                 and _labelled(j, query)]
                    return self._send(200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {},
                                            "items": items})
                if m := EVENTS.match(url.path):
                    if ("GET", "events") in fake.forbid:
                        return self._rbac("GET", {"plural": "events", "group": "", "name": None}, m["ns"])
                    selector = (query.get("fieldSelector") or [""])[0]
                    unknown = [f for f in (s.split("=")[0].rstrip("!") for s in selector.split(",") if s)
                               if f not in EVENT_FIELDS]
                    if unknown:
                        return self._status(400, "BadRequest", f"field label not supported: {unknown[0]}")
                    with fake.lock:
                        items = [copy.deepcopy(e) for e in fake.events if e["metadata"]["namespace"] == m["ns"]
                                 and _selected(_event_fields(e), selector)]
                    return self._send(200, {"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": items})
                m = CUSTOM.match(url.path)
                if not m:
                    return self._status(404, "NotFound", "the server could not find the requested resource")
                if (method, m["plural"]) in fake.forbid:
                    return self._rbac(method, m, m["ns"])
                key = (m["plural"], m["ns"] or "", m["name"] or "")
                what = f'{m["plural"]}.{m["group"]} "{m["name"]}"'
                if method == "POST":
                    return self._create(m, body)
                if method == "DELETE":
                    with fake.lock:
                        gone = fake._delete(key, (query.get("propagationPolicy") or [""])[0])
                    if gone is None:
                        return self._status(404, "NotFound", f"{what} not found")
                    return self._send(200, gone)
                if not m["name"]:  # a collection: every object of the plural in the namespace the selector picks
                    with fake.lock:
                        items = [copy.deepcopy(o) for (pl, ns, _), o in fake.objects.items()
                                 if pl == m["plural"] and ns == (m["ns"] or "") and _labelled(o, query)]
                    kind = (items[0]["kind"] if items else m["plural"].rstrip("s").capitalize()) + "List"
                    return self._send(200, {"apiVersion": f'{m["group"]}/{m["version"]}', "kind": kind,
                                            "metadata": {}, "items": items})
                with fake.lock:
                    if key not in fake.objects:
                        return self._status(404, "NotFound", f"{what} not found")
                    if m["plural"] in ("trainjobs", "pytorchjobs"):
                        fake.job_gets += 1
                        if fake.script is not None:
                            fake.script(fake, fake.objects[key])
                    return self._send(200, fake.objects.get(key) or {})

            def _create(self, m, body):
                key = (m["plural"], m["ns"], body["metadata"]["name"])
                with fake.lock:
                    if key in fake.objects:
                        return self._status(409, "AlreadyExists",
                                            f'{m["plural"]}.{m["group"]} "{key[2]}" already exists')
                    sent = copy.deepcopy(body)
                    denied = fake._admit(m["plural"], m["ns"], body)
                    if denied:
                        webhook, message = denied
                        fake.denied.append(message)
                        return self._status(403, "Forbidden", f'admission webhook "{webhook}" denied the request: '
                                            f"{message}")
                    obj = {**body, "metadata": {**body["metadata"], "namespace": m["ns"],
                                                "creationTimestamp": NOW, "uid": f"uid-{len(fake.objects)}"}}
                    fake.objects[key] = obj
                    if m["plural"] in ("trainjobs", "pytorchjobs"):
                        fake.bodies.append(sent)
                    if m["plural"] == "trainjobs" and fake.jobset_controller:
                        fake._run_jobset(obj)
                return self._send(201, obj)

            def _pods(self, m, query):
                if m["log"]:
                    with fake.lock:
                        current = next((p for p in fake.pods if p["metadata"]["name"] == m["name"]), None)
                        log = fake.logs.get(m["name"], "")
                    if isinstance(log, list):  # the current container's log: one entry per restart
                        restarts = current["status"]["containerStatuses"][0]["restartCount"] if current else 0
                        log = log[min(restarts, len(log) - 1)]
                    return self._send(200, log.encode(), "text/plain")
                with fake.lock:
                    items = [copy.deepcopy(p) for p in fake.pods if _labelled(p, query)]
                return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        return Handler


def _owned(p: dict, job: str) -> bool:
    labels = p["metadata"]["labels"]
    return job in (labels.get("jobset.sigs.k8s.io/jobset-name"), labels.get("training.kubeflow.org/job-name"))


def _labelled(obj: dict, query: dict) -> bool:
    """``labelSelector=k=v,...`` (equality terms) against ``obj``'s labels."""
    selector = dict(kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",") if "=" in kv)
    return all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
