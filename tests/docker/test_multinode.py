"""Multi-node pretraining for real: two containers on a Docker network run ``torchrun --nnodes 2``.

gloo, static rendezvous (node 0's container name as master address); the dataset and the output are
shared through the S3 endpoint. The reference is the same command as 2 processes in one container:
same seed, same global batch, so ranks, data and randomness line up and every step's loss must match.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.splits import SplitConfig
from jetlib.data.store import open_store
from tests.conftest import write_h5
from tests.docker.conftest import docker_run, sh

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.ddp]
PORT = "29500"


@pytest.fixture(scope="module")
def dataset(network, tmp_path_factory):
    """90 jets in 16-row shards (4 train shards: 2 per rank) ingested into the network's S3 endpoint."""
    mp = pytest.MonkeyPatch()
    _, endpoint = network
    from tests.docker.conftest import CREDS

    mp.setenv("JETLIB_S3_ENDPOINT", endpoint)
    for k, v in CREDS.items():
        mp.setenv(k, v)
    d = tmp_path_factory.mktemp("mn")
    mp.setenv("JETLIB_CACHE", str(d / "cache"))
    write_h5(d / "jets.h5", n=90)
    uri = ingest(d / "jets.h5", f"s3://jetlib-mn-{uuid.uuid4().hex[:8]}/store",
                 cfg=IngestConfig(split=SplitConfig(label_fractions=(0.5, 1.0)), shard_rows=16, row_group_rows=8))
    yield uri
    mp.undo()


def torchrun(*, nnodes: int, nproc: int, rank: int, master: str, data: str, out: str, epochs: int = 2) -> list[str]:
    return ["-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node", str(nproc),
            "--node-rank", str(rank), "--master-addr", master, "--master-port", PORT,
            "-m", "jetlib", "pretrain", "--data", data, "--out", out, "--preset", "tiny", "--epochs", str(epochs),
            "--device", "cpu"]


def start_nodes(image, net, data, out, epochs, timeout_s="60"):
    tag = uuid.uuid4().hex[:6]
    names = [f"jetlib-n0-{tag}", f"jetlib-n1-{tag}"]
    for rank, name in enumerate(names):
        r = docker_run(image, net, *torchrun(nnodes=2, nproc=1, rank=rank, master=names[0], data=data, out=out,
                                             epochs=epochs),
                       name=name, detach=True, entrypoint="python", env={"JETLIB_DIST_TIMEOUT_S": timeout_s})
        assert r.returncode == 0, r.stderr
    return names


def wait(name: str, timeout: float = 600) -> int:
    return int(sh("docker", "wait", name, timeout=timeout).stdout.strip())


def logs(name: str) -> str:
    r = sh("docker", "logs", name, check=False)
    return (r.stdout + r.stderr)[-4000:]


def step_losses(out: str) -> list:
    return [s for e in json.loads(open_store(out).get_bytes("metrics.json"))["epochs"] for s in e["step_losses"]]


def test_two_containers_match_two_processes_in_one(image, network, s3, dataset):
    net, _ = network
    two_nodes, one_node = f"{s3}/two-nodes", f"{s3}/one-node"
    names = start_nodes(image, net, dataset, two_nodes, epochs=2)
    try:
        codes = [wait(n) for n in names]
        assert codes == [0, 0], "\n".join(logs(n) for n in names)
    finally:
        sh("docker", "rm", "-f", *names, check=False)
    r = docker_run(image, net, *torchrun(nnodes=1, nproc=2, rank=0, master="localhost", data=dataset, out=one_node),
                   entrypoint="python")
    assert r.returncode == 0, r.stderr[-3000:]

    store = open_store(two_nodes)
    keys = store.list()
    assert keys.count("run.json") == 1 and keys.count("encoder.pt") == 1  # the run finished once, by rank 0
    run = json.loads(store.get_bytes("run.json"))
    assert run["world_size"] == 2 and run["format"] == "jetlib.pretrain/1"
    a, b = step_losses(two_nodes), step_losses(one_node)
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 4
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-6, abs=1e-7)
    # bitwise the same encoder: gloo over the network sums exactly as it does between local processes
    assert run["encoder"]["sha256"] == json.loads(open_store(one_node).get_bytes("run.json"))["encoder"]["sha256"]


def test_killing_one_node_makes_the_other_exit_nonzero_in_bounded_time(image, network, s3, dataset):
    net, _ = network
    out = f"{s3}/killed"
    names = start_nodes(image, net, dataset, out, epochs=5000, timeout_s="30")  # killed long before the end
    try:
        store = open_store(out)
        deadline = time.monotonic() + 240
        while not store.list("checkpoints") and time.monotonic() < deadline:
            running = sh("docker", "inspect", "-f", "{{.State.Running}}", names[0]).stdout.strip()
            assert running == "true", logs(names[0])
            time.sleep(0.5)
        assert store.list("checkpoints"), "training never reached its first checkpoint"
        sh("docker", "kill", names[1])
        start = time.monotonic()
        try:
            code = wait(names[0], timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail(f"node 0 still running 180 s after node 1 was killed:\n{logs(names[0])}")
        elapsed = time.monotonic() - start
        print(f"node 0 exited {code} {elapsed:.1f} s after node 1 was killed")
        assert code != 0, logs(names[0])
        assert elapsed < 120, f"node 0 took {elapsed:.0f} s to notice"
        assert not store.exists("run.json")  # nothing half-written that a later step could pick up
    finally:
        sh("docker", "rm", "-f", *names, check=False)
