"""``jetlib serve``: a real KServe model server on loopback, asked over HTTP, answering what predict answers.

The server is the CLI in a subprocess (``python -m jetlib serve``), so the requests go through
KServe's own FastAPI app and uvicorn (``kserve/protocol/rest/v2_endpoints.py``,
``V2Endpoints.infer``; ``kserve/protocol/rest/server.py``, ``RESTServer._add_exception_handlers``
maps ``InvalidInput`` to 400), not through a stand-in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("kserve")

from jetlib import finetune as ft  # noqa: E402
from jetlib.data.ingest import IngestConfig, ingest  # noqa: E402
from jetlib.data.splits import SplitConfig  # noqa: E402
from jetlib.tagger.export import export  # noqa: E402
from jetlib.tagger.predict import predict  # noqa: E402
from tests.conftest import free_port, jet_images, write_h5, write_toy_h5  # noqa: E402

pytestmark = pytest.mark.slow
NAME = "jet-tagger"
READY_S = 120  # the server imports torch, kserve and ONNX Runtime before it listens


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, export folder, training folder, root) of a server over a tiny exported classifier."""
    root = tmp_path_factory.mktemp("serve")
    write_toy_h5(root / "toy.h5", n=96, size=125)
    cfg = IngestConfig(split=SplitConfig(label_fractions=(1.0,)), shard_rows=64, row_group_rows=16)
    data = ingest(root / "toy.h5", str(root / "store"), cfg=cfg)
    training = str(root / "cls")
    ft.finetune(data, training, ft.make_config("tiny", task="cls", mode="scratch", epochs=1), device="cpu")
    folder = root / "export"
    export(training, str(folder))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(root / "serve.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "jetlib", "serve", "--model", str(folder), "--http-port",
                                 str(port), "--max-batch", "64"], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(base, proc, root / "serve.log")
            yield base, folder, training, root
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_ready(base: str, proc, log_path) -> None:
    """Poll /v2/health/ready until 200, at most READY_S seconds; the server's log if it never comes."""
    deadline = time.monotonic() + READY_S
    while True:
        try:
            if requests.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the server did not become ready: {log_path.read_text()[-2000:]}")
        time.sleep(0.5)


def infer(base: str, inputs: list[dict]):
    return requests.post(f"{base}/v2/models/{NAME}/infer", json={"id": "t", "inputs": inputs}, timeout=60)


def dense(x: np.ndarray) -> list[dict]:
    return [{"name": "jets", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]


def sparse(x: np.ndarray) -> list[dict]:
    """The store's form: flat index c*H*W + i*W + j and value of each non-zero pixel, and counts per jet."""
    flat = x.reshape(len(x), -1)
    jets, index = np.nonzero(flat)
    counts = np.bincount(jets, minlength=len(x))
    return [{"name": "index", "shape": [len(index)], "datatype": "INT64", "data": index.tolist()},
            {"name": "value", "shape": [len(index)], "datatype": "FP32", "data": flat[jets, index].tolist()},
            {"name": "counts", "shape": [len(x)], "datatype": "INT64", "data": counts.tolist()}]


def test_the_endpoints_kserve_provides(served):
    base = served[0]
    assert requests.get(f"{base}/v2/health/ready", timeout=10).json() == {"ready": True}
    assert requests.get(f"{base}/v2/health/live", timeout=10).status_code == 200  # the manifest's liveness probe
    assert requests.get(f"{base}/v1/models", timeout=10).json() == {"models": [NAME]}
    meta = requests.get(f"{base}/v2/models/{NAME}", timeout=10).json()
    assert meta["name"] == NAME
    assert meta["inputs"] == [{"name": "jets", "datatype": "FP32", "shape": [-1, 3, 125, 125]}]
    assert meta["outputs"] == [{"name": "p_quark", "datatype": "FP32", "shape": [-1]}]


def test_dense_and_sparse_jets_get_what_predict_gives(served, tmp_path):
    base, folder, training, _ = served
    write_h5(tmp_path / "jets.h5", n=10, seed=3)  # raw energies, channel-last, as the public file
    summary = predict(training, str(tmp_path / "jets.h5"), str(tmp_path / "p.parquet"))
    expected = np.asarray(pq.read_table(tmp_path / "p.parquet").column("p_quark"))
    x = jet_images(10, 3, 125, seed=3)  # the same images, channel-first (write_h5 stores them transposed)
    a = infer(base, dense(x))
    b = infer(base, sparse(x))
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    (out_a,), (out_b,) = a.json()["outputs"], b.json()["outputs"]
    assert out_a["name"] == "p_quark" and out_a["shape"] == [10] and summary["jets"] == 10
    np.testing.assert_allclose(out_a["data"], expected, atol=1e-5)
    np.testing.assert_allclose(out_b["data"], expected, atol=1e-5)
    # the v1 protocol too: {"instances": [jet, ...]}
    v1 = requests.post(f"{base}/v1/models/{NAME}:predict", json={"instances": x[:2].tolist()}, timeout=60)
    np.testing.assert_allclose(v1.json()["predictions"], expected[:2], atol=1e-5)


NAN = json.dumps({"inputs": [{"name": "jets", "shape": [1, 3, 125, 125], "datatype": "FP32",
                              "data": [float("nan")] + [0.0] * (3 * 125 * 125 - 1)}]})


@pytest.mark.parametrize("body, words", [
    ({"inputs": [{"name": "jets", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.0] * 3 * 64 * 64}]},
     "expected [batch, 3, 125, 125]"),
    ({"inputs": [{"name": "jets", "shape": [1, 3, 125, 125], "datatype": "FP32", "data": [0.0] * 10}]},
     "input 'jets'"),
    (NAN, "pixels must be finite"),
    ({"inputs": [{"name": "jets", "shape": [65, 3, 125, 125], "datatype": "FP32",
                  "data": [0.0] * 65 * 3 * 125 * 125}]}, "more than the server's limit of 64"),
    ({"inputs": [{"name": "index", "shape": [1], "datatype": "INT64", "data": [3 * 125 * 125]},
                 {"name": "value", "shape": [1], "datatype": "FP32", "data": [1.0]},
                 {"name": "counts", "shape": [1], "datatype": "INT64", "data": [1]}]}, "outside the image"),
    ({"inputs": [{"name": "index", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                 {"name": "value", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]},
                 {"name": "counts", "shape": [1], "datatype": "INT64", "data": [1]}]}, "add up"),
    ({"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "expected 'jets'"),
    ('{"inputs": [{"name": "jets", "shape": [1, 3', "JSON"),
])
def test_bad_requests_get_a_4xx_with_one_line_and_the_server_keeps_serving(served, body, words):
    base = served[0]
    data = body if isinstance(body, str) else json.dumps(body)
    r = requests.post(f"{base}/v2/models/{NAME}/infer", data=data, headers={"content-type": "application/json"},
                      timeout=60)
    assert 400 <= r.status_code < 500, r.text
    assert words in r.text and "Traceback" not in r.text
    error = r.json().get("error")
    if error is not None:  # jetlib's own refusals: one line
        assert "\n" not in error
    ok = infer(base, dense(jet_images(1, 3, 125, seed=0)))
    assert ok.status_code == 200 and requests.get(f"{base}/v2/health/ready", timeout=10).status_code == 200
