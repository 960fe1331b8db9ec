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
    aggregate,
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

    def _tick(self) -> None:
        """Advance foreground deletions: pods terminate, then the owner goes (called once per request)."""
        for key in list(self._deleting):
            self._deleting[key] -= 1
            if self._deleting[key] <= 0:
                del self._deleting[key]
                self.objects.pop(key, None)
                self.pods = [p for p in self.pods if not _owned(p, key[2])]

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
                    return self._pods(m, query)
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
                selector = dict(kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",")
                                if "=" in kv)
                with fake.lock:
                    items = [copy.deepcopy(p) for p in fake.pods
                             if all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())]
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
