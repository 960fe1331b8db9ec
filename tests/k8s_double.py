"""An HTTP test double of the Kubernetes API server, for the launcher tests.

It speaks the real REST paths the ``kubernetes`` client and the ``kubeflow`` SDK use (custom
objects, pods, pod logs, config maps), keeps objects in memory, records every request, and lets a
test script the cluster: which requests are forbidden (RBAC), what the pods report, what node 0
logs, and when the job's conditions change. Nothing in jetlib or the SDK is mocked: they talk HTTP.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

RUNTIME = {  # the shape of Kubeflow Trainer v2.3.0's stock torch-distributed ClusterTrainingRuntime
    "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
    "metadata": {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}},
    "spec": {"mlPolicy": {"numNodes": 1, "torch": {}},
             "template": {"spec": {"replicatedJobs": [{"name": "node", "replicas": 1, "template": {
                 "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                 "spec": {"template": {"spec": {"containers": [{
                     "name": "node", "image": "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime",
                     "command": ["/bin/bash", "-c", "echo stock runtime command"]}]}}}}}]}}},
}
CUSTOM = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)(?:/namespaces/(?P<ns>[^/]+))?"
                    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<log>/log)?)?$")
CONFIGMAP = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/configmaps/(?P<name>[^/]+)$")


def pod(name: str, labels: dict, phase: str = "Running", waiting: str | None = None, oom: bool = False,
        unschedulable: bool = False) -> dict:
    """A pod as the API server returns it, with the status fields the launcher reads."""
    state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    if waiting:
        state = {"waiting": {"reason": waiting, "message": f"Back-off pulling image (test: {waiting})"}}
    if oom:
        state = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    status = {"phase": phase, "containerStatuses": [{"name": "node", "image": "jetlib:0.1.0", "imageID": "",
                                                     "ready": phase == "Running", "restartCount": 0,
                                                     "state": state}]}
    if unschedulable:
        status = {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ml", "labels": labels,
                                                            "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": status}


class FakeKubernetes:
    """State and behaviour of the double; ``script(fake, job)`` runs on every GET of a job object."""

    def __init__(self):
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[dict] = []
        self.forbid: set[tuple[str, str]] = set()  # (METHOD, plural) answered 403
        self.pods: list[dict] = []
        self.logs: dict[str, str] = {}
        self.job_gets = 0
        self.script = None
        self.lock = threading.Lock()
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

    def set_condition(self, plural: str, name: str, ctype: str, reason: str = "", message: str = "") -> None:
        for (pl, _, n), obj in self.objects.items():
            if pl == plural and n == name:
                obj.setdefault("status", {})["conditions"] = [
                    {"type": ctype, "status": "True", "reason": reason, "message": message,
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]

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

            def _status(self, code: int, reason: str, message: str):
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                  "reason": reason, "message": message})

            def _route(self, method: str):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with fake.lock:
                    fake.requests.append((method, url.path))
                if m := CONFIGMAP.match(url.path):
                    if m["name"] == "kubeflow-trainer-public":
                        return self._send(200, {"apiVersion": "v1", "kind": "ConfigMap",
                                                "metadata": {"name": m["name"], "namespace": m["ns"]},
                                                "data": {"kubeflow_trainer_version": "v2.3.0"}})
                    return self._status(404, "NotFound", "configmap not found")
                if m := PODS.match(url.path):
                    if m["log"]:
                        return self._send(200, fake.logs.get(m["name"], "").encode(), "text/plain")
                    selector = dict(kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",")
                                    if "=" in kv)
                    items = [p for p in fake.pods
                             if all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())]
                    return self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
                m = CUSTOM.match(url.path)
                if not m:
                    return self._status(404, "NotFound", f"no route {url.path}")
                if (method, m["plural"]) in fake.forbid:
                    return self._status(403, "Forbidden", f'{m["plural"]}.{m["group"]} is forbidden: User '
                                        f'"system:serviceaccount:ml:pipeline-runner" cannot {method.lower()}')
                if m["plural"] == "clustertrainingruntimes" and m["name"] == "torch-distributed":
                    return self._send(200, RUNTIME)
                key = (m["plural"], m["ns"] or "", m["name"] or "")
                if method == "POST":
                    key = (m["plural"], m["ns"], body["metadata"]["name"])
                    with fake.lock:
                        if key in fake.objects:
                            return self._status(409, "AlreadyExists", "exists")
                        obj = {**body, "metadata": {**body["metadata"], "namespace": m["ns"],
                                                    "creationTimestamp": "2026-01-01T00:00:00Z"}}
                        fake.objects[key] = obj
                        fake.bodies.append(body)
                    return self._send(201, obj)
                if method == "DELETE":
                    with fake.lock:
                        gone = fake.objects.pop(key, None)
                    if gone is None:
                        return self._status(404, "NotFound", "not found")
                    return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                if key not in fake.objects:
                    return self._status(404, "NotFound", f"{m['plural']} {m['name']} not found")
                with fake.lock:
                    fake.job_gets += 1
                    if fake.script is not None:
                        fake.script(fake, fake.objects[key])
                    return self._send(200, fake.objects.get(key) or {})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        return Handler
