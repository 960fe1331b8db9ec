"""Tagger throughput on the CPU: jetlib predict through torch and through ONNX Runtime, against a naive loop.

    python benchmarks/predict.py [--n-jets 1000] [--source FILE.h5] [--preset cpu] [--threads 1]

One JSON line on stdout:

* ``naive_jets_per_s``: the baseline, measured in the same run: each jet read alone from the HDF5
  file (``f["X_jets"][i]``), made a torch tensor and scored by the same model at batch 1, in eager
  torch at the precision predict's torch path uses (float32 on the CPU), what a first script does;
* ``predict_torch_jets_per_s`` / ``predict_onnx_jets_per_s``: ``jetlib predict`` end to end over
  the whole file (validation, sha256, blocks of ~64 MB, batches of ``--batch-size``, Parquet out),
  with the training folder (torch eager) and with the exported folder (ONNX Runtime);
* their ratios to the baseline (each throughput the median of ``--rounds`` interleaved rounds);
* ``served_*_ms``: latency of ``jetlib serve`` over HTTP on loopback (the ``requests`` client,
  one connection), p50 and p99 of ``--requests`` requests, at batch 1 and 64, jets sent sparse
  (the store's index/value form), and at batch 1 dense.

The model is a classifier trained one epoch (``--preset``'s network: ``cpu`` is the laptop one) on
the file itself: speed does not depend on how well it was trained. Threads: ``--threads`` for torch
and ONNX Runtime alike (1 by default: a fair, quiet comparison on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import simulated_file  # noqa: E402

from jetlib import finetune as ft  # noqa: E402
from jetlib.data.ingest import IngestConfig, ingest  # noqa: E402
from jetlib.data.splits import SplitConfig  # noqa: E402
from jetlib.device import inference_autocast  # noqa: E402
from jetlib.tagger.export import export  # noqa: E402
from jetlib.tagger.load import load  # noqa: E402
from jetlib.tagger.predict import predict  # noqa: E402


def naive(model: str, source: Path, jets: int) -> float:
    """Jets/s of the one-by-one loop over the first ``jets`` jets, at the precision predict uses
    (``inference_autocast``: float32 on the CPU), so the ratio is the pipeline's, not the precision's."""
    m = load(model)
    cpu = torch.device("cpu")
    run = m.runner(cpu, inference_autocast(cpu, m.run["config"].get("amp", "auto")))
    with h5py.File(source, "r") as f:
        ds = f["X_jets"]
        run(torch.from_numpy(np.ascontiguousarray(ds[0].transpose(2, 0, 1), dtype=np.float32))[None])  # warm-up
        t0 = time.perf_counter()
        for i in range(jets):
            run(torch.from_numpy(np.ascontiguousarray(ds[i].transpose(2, 0, 1), dtype=np.float32))[None])
        return jets / (time.perf_counter() - t0)


def end_to_end(model: str, source: Path, out: Path, batch_size: int) -> float:
    predict(model, str(source), str(out), batch_size=batch_size)  # warm-up: caches, lazy imports
    t0 = time.perf_counter()
    summary = predict(model, str(source), str(out), batch_size=batch_size)
    return summary["jets"] / (time.perf_counter() - t0)


def sparse_body(x: np.ndarray) -> dict:
    flat = x.reshape(len(x), -1)
    jets, index = np.nonzero(flat)
    return {"inputs": [
        {"name": "index", "shape": [len(index)], "datatype": "INT64", "data": index.tolist()},
        {"name": "value", "shape": [len(index)], "datatype": "FP32", "data": flat[jets, index].tolist()},
        {"name": "counts", "shape": [len(x)], "datatype": "INT64",
         "data": np.bincount(jets, minlength=len(x)).tolist()}]}


def dense_body(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "jets", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


def served(folder: Path, images: np.ndarray, requests_n: int, threads: int) -> dict:
    import requests

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "jetlib", "serve", "--model", str(folder), "--http-port",
                             str(port), "--threads", str(threads)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    out = {}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        session = requests.Session()
        url = f"{base}/v2/models/jet-tagger/infer"
        for label, batch, body in (("sparse_b1", 1, sparse_body), ("sparse_b64", 64, sparse_body),
                                   ("dense_b1", 1, dense_body)):
            times = []
            for i in range(requests_n + 3):
                start = (i * batch) % max(1, len(images) - batch)
                payload = json.dumps(body(images[start:start + batch]))
                t0 = time.perf_counter()
                r = session.post(url, data=payload, headers={"content-type": "application/json"}, timeout=120)
                elapsed = time.perf_counter() - t0
                assert r.status_code == 200, r.text
                if i >= 3:  # warm-up requests left out
                    times.append(elapsed * 1000)
            out[f"served_{label}_p50_ms"] = float(np.percentile(times, 50))
            out[f"served_{label}_p99_ms"] = float(np.percentile(times, 99))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-jets", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source", type=Path, help="an HDF5 file (quark/gluon layout) instead of simulating --n-jets")
    ap.add_argument("--preset", default="cpu", help="the network's preset (tiny, cpu, gpu)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--naive-jets", type=int, default=300, help="jets the one-by-one baseline scores")
    ap.add_argument("--requests", type=int, default=100, help="requests per served latency")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three throughputs (median)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    source = args.source or simulated_file(args.n_jets, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        data = ingest(source, str(tmp / "store"),
                      cfg=IngestConfig(split=SplitConfig(label_fractions=(1.0,)), image_size=None))
        model = str(tmp / "cls")
        ft.finetune(data, model, ft.make_config(args.preset, task="cls", mode="scratch", epochs=1), device="cpu")
        export(model, str(tmp / "export"))
        with h5py.File(source, "r") as f:
            n = len(f["X_jets"])
            images = np.ascontiguousarray(f["X_jets"][: min(n, 256)].transpose(0, 3, 1, 2), dtype=np.float32)
        rates = {"naive": [], "torch": [], "onnx": []}
        for _ in range(args.rounds):  # interleaved rounds, the median of each: a shared machine's load drifts
            rates["naive"].append(naive(model, source, min(args.naive_jets, n)))
            rates["torch"].append(end_to_end(model, source, tmp / "torch.parquet", args.batch_size))
            rates["onnx"].append(end_to_end(str(tmp / "export"), source, tmp / "onnx.parquet", args.batch_size))
        base, eager, onnx = (float(np.median(rates[k])) for k in ("naive", "torch", "onnx"))
        latency = served(tmp / "export", images, args.requests, args.threads)
        amp = load(model).run["config"].get("amp")
    print(json.dumps({"benchmark": "predict", "jets": n, "preset": args.preset, "threads": args.threads,
                      "batch_size": args.batch_size, "rounds": args.rounds,
                      "training_autocast": amp,
                      "load_avg_1min": os.getloadavg()[0], "naive_jets_per_s": base, "predict_torch_jets_per_s": eager,
                      "predict_onnx_jets_per_s": onnx, "torch_vs_naive": eager / base, "onnx_vs_naive": onnx / base,
                      **latency}))


if __name__ == "__main__":
    main()
