"""Multi-node pretraining for real: two containers on a Docker network, as a 2-node TrainJob runs.

Each container runs exactly the command jetlib.cluster puts in the TrainJob (``trainer_command``: no
torchrun flag) with only the PET_* variables Kubeflow Trainer v2.3.0 injects into its node container
(tests/trainer_rules.py ``pet_env``, from pkg/runtime/framework/plugins/torch/torch.go EnforceMLPolicy):
PET_NNODES=2, PET_NPROC_PER_NODE=1 (the runtime's CPU request rounded up), PET_NODE_RANK, and
PET_MASTER_ADDR=<job>-node-0-0.<job>, PET_MASTER_PORT=29500, that name being node 0's network alias as
the JobSet's headless service names it. gloo, static rendezvous; the dataset and the output are
shared through the S3 endpoint. The reference is 2 processes in one container: same seed, same
global batch, so ranks, data and randomness line up and every step's loss must match.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from jetlib.cluster import JobRequest, job_name, trainer_command
from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.splits import SplitConfig
from jetlib.data.store import open_store
from tests.conftest import write_h5
from tests.docker.conftest import docker_run, sh
from tests.k8s_double import jetlib_runtime
from tests.trainer_rules import PET_NAMES, pet_env

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.ddp]


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


def reference_command(data: str, out: str, epochs: int = 2) -> list[str]:
    """The same jetlib arguments as the TrainJob's, as 2 processes of one standalone torchrun."""
    req = JobRequest(data=data, out=out, nodes=1, gpus_per_node=0, image="-:-", preset="tiny", augment="seed",
                     extra_args=("--epochs", str(epochs)))
    command = trainer_command(req)
    assert command[:3] == ["python", "-m", "torch.distributed.run"]
    return [*command[1:3], "--standalone", "--nnodes", "1", "--nproc-per-node", "2", *command[3:]]


def start_nodes(image, net, data, out, epochs, extra_env: dict | None = None):
    """Two containers as the TrainJob's two node pods: the launcher's command, the Trainer's PET_* env."""
    req = JobRequest(data=data, out=out, nodes=2, gpus_per_node=0, image=image, preset="tiny", augment="seed",
                     extra_args=("--epochs", str(epochs)))
    command = trainer_command(req)
    job = job_name(out)
    # what the launcher sends for CPU nodes (tests/test_cluster_launch.py checks it): no resourcesPerNode
    body = {"metadata": {"name": job}, "spec": {"trainer": {"numNodes": 2, "image": image, "command": command}}}
    runtime = jetlib_runtime()
    names = [f"{job}-n{rank}-{uuid.uuid4().hex[:6]}" for rank in range(2)]
    for rank, name in enumerate(names):
        env = pet_env(body, runtime, rank)
        assert sorted(env) == sorted(PET_NAMES) and env["PET_NPROC_PER_NODE"] == "1"
        aliases = (env["PET_MASTER_ADDR"],) if rank == 0 else ()
        r = docker_run(image, net, *command[1:], name=name, detach=True, entrypoint=command[0],
                       env={**env, **(extra_env or {})}, aliases=aliases)
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
    r = docker_run(image, net, *reference_command(dataset, one_node), entrypoint="python")
    assert r.returncode == 0, r.stderr[-3000:]

    store = open_store(two_nodes)
    keys = store.list()
    assert keys.count("run.json") == 1 and keys.count("encoder.pt") == 1  # the run finished once, by rank 0
    run = json.loads(store.get_bytes("run.json"))
    assert run["world_size"] == 2 and run["format"] == "jetlib.pretrain/2"
    a, b = step_losses(two_nodes), step_losses(one_node)
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 4
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-6, abs=1e-7)
    # bitwise the same encoder: gloo over the network sums exactly as it does between local processes
    assert run["encoder"]["sha256"] == json.loads(open_store(one_node).get_bytes("run.json"))["encoder"]["sha256"]


def test_killing_one_node_makes_the_other_exit_nonzero_in_bounded_time(image, network, s3, dataset):
    net, _ = network
    out = f"{s3}/killed"
    # killed long before the end; jetlib's own collective timeout bounds how long node 0 waits
    names = start_nodes(image, net, dataset, out, epochs=5000, extra_env={"JETLIB_DIST_TIMEOUT_S": "30"})
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
