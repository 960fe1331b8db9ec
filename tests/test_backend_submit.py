"""``make submit``: the request ``kfp run create`` sends, checked the way a KFP 2.17.0 API server checks it.

A stand-in of the API server's REST surface (``http.server`` on 127.0.0.1) answers the kfp client's
calls and applies the server's run-create parameter check to every ``POST /apis/v2beta1/runs``:
kubeflow/pipelines 2.17.0, backend/src/apiserver/template/v2_template.go,
``V2Spec.validatePipelineJobInputs``. The request's ``runtime_config.parameters`` are
``google.protobuf.Value``s round-tripped through JSON (backend/src/apiserver/server/api_converter.go,
``toModelParameters``; backend/src/apiserver/template/template.go, ``modelToPipelineJobRuntimeConfig``),
so what the check sees is each value's JSON kind: NUMBER_INTEGER and NUMBER_DOUBLE need a number,
STRING a string, BOOLEAN a bool, LIST a list, STRUCT an object, and a parameter the pipeline does
not declare is refused ("parameter(s) provided are not required by pipeline").
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"NUMBER_INTEGER": (int, float), "NUMBER_DOUBLE": (int, float), "STRING": (str,), "BOOLEAN": (bool,),
         "LIST": (list,), "STRUCT": (dict,)}


def validate_inputs(root_inputs: dict, parameters: dict) -> str | None:
    """The API server's verdict on a run's parameters: None (accepted) or its error message."""
    declared = root_inputs.get("parameters", {})
    for name, param in declared.items():
        if name not in parameters:
            if not param.get("isOptional") and "defaultValue" not in param:
                return f"parameter {name} is not optional, yet has neither default value nor user provided value"
            continue
        value, kind = parameters[name], param["parameterType"]
        # JSON keeps bools apart from numbers (a protobuf Value's bool_value is not a number_value)
        if kind not in KINDS or isinstance(value, bool) != (kind == "BOOLEAN") or not isinstance(value, KINDS[kind]):
            return f"input parameter {name} requires type {kind}, but the parameter value is {json.dumps(value)}"
    extra = sorted(set(parameters) - set(declared))
    return f"parameter(s) provided are not required by pipeline: {', '.join(extra)}" if extra else None


class ApiServer(BaseHTTPRequestHandler):
    """The calls ``kfp run create`` makes: find or create the experiment, create the run, read it back."""

    runs: list[dict]

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's names)
        if self.path == "/apis/v2beta1/healthz":  # the client asks first (single-user deployment)
            return self._reply(200, {"multi_user": False})
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply(200, {})  # none yet: the client creates it
        if self.path.startswith("/apis/v2beta1/runs/"):
            run = next((r for r in self.runs if self.path.endswith(r["run_id"])), None)
            return self._reply(200, run) if run else self._reply(404, {"error": "no such run"})
        return self._reply(404, {"error": f"not in the stand-in: GET {self.path}"})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/apis/v2beta1/experiments":
            return self._reply(200, {"experiment_id": "e-1", "display_name": body["display_name"]})
        if self.path == "/apis/v2beta1/runs":
            spec = body["pipeline_spec"]
            spec = spec.get("pipeline_spec", spec)  # with a platform spec the client nests them
            error = validate_inputs(spec["root"].get("inputDefinitions", {}),
                                    body.get("runtime_config", {}).get("parameters", {}))
            if error:
                return self._reply(400, {"error": error, "code": 3, "message": error})
            run = {"run_id": f"r-{len(self.runs) + 1}", "display_name": body["display_name"],
                   "experiment_id": body["experiment_id"], "state": "PENDING", "created_at": "2026-12-01T00:00:00Z",
                   "runtime_config": body.get("runtime_config", {}), "_spec": spec}
            self.runs.append(run)
            return self._reply(200, {k: v for k, v in run.items() if k != "_spec"})
        return self._reply(404, {"error": f"not in the stand-in: POST {self.path}"})


@pytest.fixture
def api_server():
    handler = type("Handler", (ApiServer,), {"runs": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler.runs
    server.shutdown()
    server.server_close()


def make_submit(endpoint: str, tmp_path: Path, args: str, **variables) -> subprocess.CompletedProcess:
    """``make submit`` as a user runs it (``-o`` keeps make from re-creating the venv)."""
    extra = [f"{k}={v}" for k, v in variables.items()]
    env = {**os.environ, "HOME": str(tmp_path)}  # the kfp client keeps its context file under HOME
    return subprocess.run(["make", "-s", "-o", ".venv/.installed", "submit", f"KFP_ENDPOINT={endpoint}",
                           f"ARGS={args}", *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


# The documented forms (docs/workflow.md, "Parameters on the command line"), every type the pipeline has.
README_ARGS = ("store=s3://jets/study source=s3://jets/raw/qg.h5 run_name=exp1 n_jets=4000 preset=gpu "
               "'label_fractions=[0.01,0.1]' 'seeds=[0,1,2]' 'modes=[\"cls-finetune\",\"cls-vgg\"]' "
               "gpus_per_node=4 nodes=1 store_secret=jetlib-s3")


def test_the_readmes_submit_forms_make_a_request_the_api_server_accepts(api_server, tmp_path):
    endpoint, runs = api_server
    done = make_submit(endpoint, tmp_path, README_ARGS)
    assert done.returncode == 0, done.stderr
    (run,) = runs
    params = run["runtime_config"]["parameters"]
    assert params == {"store": "s3://jets/study", "source": "s3://jets/raw/qg.h5", "run_name": "exp1", "n_jets": 4000,
                      "preset": "gpu", "label_fractions": [0.01, 0.1], "seeds": [0, 1, 2],
                      "modes": ["cls-finetune", "cls-vgg"], "gpus_per_node": 4, "nodes": 1,
                      "store_secret": "jetlib-s3"}
    # the request carries the compiled spec the server checks them against
    committed = next(yaml.safe_load_all((ROOT / "pipelines" / "jet_ssl.yaml").read_text()))
    assert run["_spec"]["root"]["inputDefinitions"] == committed["root"]["inputDefinitions"]
    assert run["_spec"]["pipelineInfo"]["name"] == "jet-ssl"


def test_each_submission_gets_its_own_display_name(api_server, tmp_path):
    endpoint, runs = api_server
    for _ in range(2):
        assert make_submit(endpoint, tmp_path, "preset=tiny").returncode == 0
    names = [r["display_name"] for r in runs]
    assert names[0] != names[1] and all(n.startswith("jet_ssl-") for n in names)
    assert make_submit(endpoint, tmp_path, "", RUN="exp7").returncode == 0
    assert runs[-1]["display_name"] == "exp7"


@pytest.mark.parametrize("arg,why", [
    ("label_fractions=0.1", "label_fractions requires type LIST"),  # a list needs JSON brackets
    ("modes=cls-vgg", "modes requires type LIST"),  # and JSON strings inside
    ("run_name=2024", "run_name requires type STRING"),  # the client reads 2024 as a number
    ("preset=true", "preset requires type STRING"),
    ("nodes=two", "nodes requires type NUMBER_INTEGER"),
    ("gpus=1", "not required by pipeline: gpus"),
])
def test_forms_the_api_server_refuses(api_server, tmp_path, arg, why):
    endpoint, runs = api_server
    done = make_submit(endpoint, tmp_path, arg)
    assert done.returncode != 0 and runs == []
    assert why in done.stdout + done.stderr


def test_a_quoted_number_is_a_string(api_server, tmp_path):
    endpoint, runs = api_server
    assert make_submit(endpoint, tmp_path, "run_name='\"2024\"' source=").returncode == 0
    assert runs[0]["runtime_config"]["parameters"] == {"run_name": "2024", "source": ""}
