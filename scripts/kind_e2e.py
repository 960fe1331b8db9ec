"""make kind-e2e: run the CPU-compiled pipeline with the tiny preset on the kind cluster and check it.

Port-forwards the KFP API and the S3 store (KFP's SeaweedFS), submits ``pipelines/jet_ssl_cpu.yaml``
(compiled with ``JETLIB_IMAGE`` = the image loaded by ``make kind-up``), waits at most ``E2E_TIMEOUT_S`` seconds,
fails unless the run SUCCEEDED, then reads the report's ``summary.json`` back from the store and
prints it as one JSON line. Credentials come from ``manifests/kind/s3.env`` (never printed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = os.environ.get("KIND_CLUSTER", "jetlib")
TIMEOUT_S = int(os.environ.get("E2E_TIMEOUT_S", "3600"))
STORE = os.environ.get("E2E_STORE", "s3://jetlib/e2e")
# Pretraining nodes: 2 sends pretraining through jetlib.cluster as a TrainJob over both kind workers
# (CPU pods: gpus_per_node=0), so the multi-node path runs for real; 1 keeps it in the step's pod.
NODES = int(os.environ.get("E2E_NODES", "2"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def port_forward(target: str, remote: int):
    """``kubectl port-forward`` to a local port for the duration of the block; yields the local URL."""
    port = free_port()
    proc = subprocess.Popen(["kubectl", "--context", f"kind-{CLUSTER}", "-n", "kubeflow", "port-forward", target,
                             f"{port}:{remote}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(120):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                sys.exit(f"kind-e2e: port-forward to {target} failed: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    import kfp

    env_file = ROOT / "manifests" / "kind" / "s3.env"
    if not env_file.exists():
        sys.exit("kind-e2e: manifests/kind/s3.env is missing (make kind-up writes it)")
    creds = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
                 and not line.startswith("#"))
    package = ROOT / "pipelines" / "jet_ssl_cpu.yaml"
    run_name = f"kind-e2e-{int(time.time())}"
    arguments = {"store": STORE, "n_jets": 400, "preset": "tiny", "seeds": [0], "label_fractions": [0.5],
                 "modes": ["cls-finetune", "cls-scratch"], "run_name": run_name, "nodes": NODES, "gpus_per_node": 0}
    with port_forward("svc/ml-pipeline", 8888) as kfp_url, port_forward("svc/seaweedfs", 8333) as s3_url:
        client = kfp.Client(host=kfp_url)
        run = client.create_run_from_pipeline_package(str(package), arguments=arguments, run_name=run_name,
                                                      experiment_name="jetlib-e2e")
        print(f"kind-e2e: submitted run {run.run_id} ({run_name}); waiting up to {TIMEOUT_S} s", flush=True)
        try:
            done = client.wait_for_run_completion(run.run_id, timeout=TIMEOUT_S)
        except TimeoutError:
            print(f"kind-e2e: run {run.run_id} did not finish within {TIMEOUT_S} s", file=sys.stderr)
            return 1
        if done.state != "SUCCEEDED":
            print(f"kind-e2e: run {run.run_id} ended {done.state}: {done.error or ''}", file=sys.stderr)
            return 1
        os.environ.update(JETLIB_S3_ENDPOINT=s3_url, AWS_ACCESS_KEY_ID=creds["AWS_ACCESS_KEY_ID"],
                          AWS_SECRET_ACCESS_KEY=creds["AWS_SECRET_ACCESS_KEY"])
        from jetlib.data.store import open_store
        from jetlib.study import pretrain_dir

        runs = open_store(f"{STORE}/runs/{run_name}")
        summary = json.loads(runs.get_bytes("report/summary.json"))
        pretrain = json.loads(runs.get_bytes(f"{pretrain_dir('', 0)}/run.json"))  # the default method and seed
        if pretrain.get("world_size") != NODES:
            print(f"kind-e2e: pretraining ran on world size {pretrain.get('world_size')}, expected {NODES}",
                  file=sys.stderr)
            return 1
    print(json.dumps({"run_id": run.run_id, "state": done.state, "pretrain_world_size": NODES, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
