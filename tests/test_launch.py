"""jetlib.launch against an HTTP double of the Kubernetes API server (tests/k8s_double.py).

The real ``kubernetes`` client and the ``kubeflow`` SDK's TrainerClient talk HTTP to the double;
job bodies they send are validated against the published CRD schemas.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from jetlib.checkpoint import save_object
from jetlib.data.store import open_store
from jetlib.errors import ConfigError, TrainingError
from jetlib.launch import SECRET_KEYS, JobRequest, job_name, launch_pretrain, pytorchjob_body
from tests.k8s_double import RUNTIME, FakeKubernetes, pod
from tests.schemas import validate_custom

pytestmark = pytest.mark.s3
NODE = "jobset.sigs.k8s.io/replicatedjob-name"
INDEX = "batch.kubernetes.io/job-completion-index"


@pytest.fixture
def k8s(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKubernetes() as fake:
        monkeypatch.setenv("KUBECONFIG", fake.kubeconfig(tmp_path / "kubeconfig"))
        yield fake


@pytest.fixture
def finished(s3_env):
    """(data, out) URIs; ``out`` holds a finished pretraining run, as rank 0 leaves it."""
    out = f"{s3_env}/pretrain"
    store = open_store(out)
    enc = save_object(store, "encoder.pt", {"w": torch.arange(4.0)})
    run = {"format": "jetlib.pretrain/1", "encoder": enc, "world_size": 2}
    store.put_bytes("run.json", json.dumps(run).encode())
    return f"{s3_env}/data", out, run


def kwargs(data, out, **kw):
    return {"data": data, "out": out, "nodes": 2, "gpus_per_node": 0, "image": "jetlib:0.1.0", "preset": "tiny",
            "augment": "seed", "extra_args": ["--epochs", "1"], "secret": "jetlib-s3", "poll_s": 0.02, **kw}


def trainjob_pods(name: str, **node1) -> list[dict]:
    base = {"jobset.sigs.k8s.io/jobset-name": name, NODE: "node"}
    return [pod(f"{name}-node-0-0", {**base, INDEX: "0"}), pod(f"{name}-node-0-1", {**base, INDEX: "1"}, **node1)]


def complete_after(n: int, plural: str = "trainjobs", ctype: str = "Complete"):
    def script(fake, job):
        if fake.job_gets >= n:
            fake.set_condition(plural, job["metadata"]["name"], ctype, "JobCompleted", "done")
    return script


def test_trainjob_through_sdk_streams_node0_and_returns_run(k8s, finished, capsys):
    data, out, run = finished
    name = job_name(out)
    k8s.pods = trainjob_pods(name)
    k8s.logs[f"{name}-node-0-0"] = "epoch 1 loss 4.1\nepoch 2 loss 3.9\n"
    k8s.logs[f"{name}-node-0-1"] = "node 1 must not be streamed\n"
    k8s.script = complete_after(3)

    got = launch_pretrain(**kwargs(data, out))

    assert got == run
    printed = capsys.readouterr().out
    assert "[node-0] epoch 1 loss 4.1" in printed and "[node-0] epoch 2 loss 3.9" in printed
    assert "node 1 must not be streamed" not in printed
    (body,) = k8s.bodies
    validate_custom(body)  # the SDK's body, as sent, fits Kubeflow Trainer v2.3.0's TrainJob schema
    validate_custom(RUNTIME)  # and the double serves a runtime that fits its own schema
    assert body["metadata"]["name"] == name and body["metadata"]["labels"] == {"app": "jetlib-pretrain"}
    spec = body["spec"]
    assert spec["runtimeRef"]["name"] == "torch-distributed" and spec["runtimeRef"]["kind"] == "ClusterTrainingRuntime"
    assert spec["trainer"]["numNodes"] == 2 and spec["trainer"]["image"] == "jetlib:0.1.0"
    assert spec["trainer"]["command"] == [
        "python", "-m", "torch.distributed.run", "--nproc-per-node", "1", "-m", "jetlib", "pretrain",
        "--data", data, "--out", out, "--preset", "tiny", "--augment", "seed", "--epochs", "1"]
    (patch,) = spec["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    podspec = rjob["template"]["spec"]["template"]["spec"]
    (container,) = podspec["containers"]
    assert container["name"] == "node" and rjob["name"] == "node"
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]} == {
        k: {"name": "jetlib-s3", "key": k} for k in SECRET_KEYS}
    assert all("value" not in e for e in container["env"])  # credentials by reference only
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert podspec["securityContext"]["runAsNonRoot"] is True


def test_pytorchjob_body_fits_crd_and_runs_through_backend(k8s, finished):
    data, out, run = finished
    req = JobRequest(data=data, out=out, nodes=3, gpus_per_node=4, image="jetlib-cuda:0.1.0", preset="gpu",
                     augment="physics", secret="s3creds", namespace="ml", node_selector={"gpu": "a100"},
                     tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},))
    body = pytorchjob_body(req, "j")
    validate_custom(body)
    specs = body["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    container = specs["Worker"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert container["command"][3:9] == ["--master-addr", "$(MASTER_ADDR)", "--master-port", "$(MASTER_PORT)",
                                         "--nproc-per-node", "4"]
    assert specs["Master"]["template"]["spec"]["nodeSelector"] == {"gpu": "a100"}

    name = job_name(out)
    k8s.pods = [pod(f"{name}-master-0", {"training.kubeflow.org/job-name": name,
                                          "training.kubeflow.org/replica-type": "master",
                                          "training.kubeflow.org/replica-index": "0"})]
    k8s.script = complete_after(2, "pytorchjobs", "Succeeded")
    assert launch_pretrain(**kwargs(data, out, backend="pytorchjob")) == run
    validate_custom(k8s.bodies[0])


def test_failed_job_names_the_oom_killed_pod(k8s, finished):
    data, out, _ = finished
    name = job_name(out)
    k8s.pods = trainjob_pods(name, oom=True)

    def script(fake, job):
        if fake.job_gets >= 2:
            fake.set_condition("trainjobs", name, "Failed", "TrainingFailed", "jobset failed")
    k8s.script = script
    with pytest.raises(TrainingError) as err:
        launch_pretrain(**kwargs(data, out))
    line = str(err.value)
    assert line.startswith(f"TrainJob ml/{name} failed: TrainingFailed: jobset failed")
    assert f"{name}-node-0-1" in line and "OOM-killed" in line and "\n" not in line
    assert err.value.exit_code == 4


def test_image_pull_failure_fails_fast_and_deletes_the_job(k8s, finished):
    data, out, _ = finished
    k8s.pods = trainjob_pods(job_name(out), waiting="ImagePullBackOff", phase="Pending")
    with pytest.raises(TrainingError, match=r"image pull failed \(ImagePullBackOff\) for jetlib:0.1.0"):
        launch_pretrain(**kwargs(data, out, grace_s=0))
    assert k8s.calls("DELETE", "trainjobs") == 1 and not k8s.objects


def test_timeout_deletes_the_job_and_reports_unschedulable(k8s, finished):
    data, out, _ = finished
    k8s.pods = trainjob_pods(job_name(out), unschedulable=True)
    start = time.monotonic()
    with pytest.raises(TrainingError, match=r"did not finish within 0.5 s \(last problem: .*unschedulable: 0/3"):
        launch_pretrain(**kwargs(data, out, timeout_s=0.5))
    assert time.monotonic() - start < 10
    assert k8s.calls("DELETE", "trainjobs") == 1 and not k8s.objects


def test_rbac_denied_is_one_line_naming_the_verb(k8s, finished):
    data, out, _ = finished
    k8s.forbid.add(("POST", "trainjobs"))
    with pytest.raises(ConfigError, match=r"^RBAC denied: this service account cannot create "
                                          r"trainjobs.trainer.kubeflow.org in namespace ml;"):
        launch_pretrain(**kwargs(data, out))
    assert not k8s.objects


def test_resubmission_attaches_to_running_job_and_replaces_failed_one(k8s, finished):
    data, out, run = finished
    name = job_name(out)
    k8s.objects[("trainjobs", "ml", name)] = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
                                              "metadata": {"name": name, "namespace": "ml"}, "spec": {}}
    k8s.script = complete_after(3)
    assert launch_pretrain(**kwargs(data, out)) == run
    assert k8s.calls("POST", "trainjobs") == 0  # attached, did not start a second job

    k8s.set_condition("trainjobs", name, "Failed", "Preempted", "node lost")
    k8s.job_gets, k8s.script = 0, complete_after(4)
    assert launch_pretrain(**kwargs(data, out)) == run
    assert k8s.calls("DELETE", "trainjobs") == 1 and k8s.calls("POST", "trainjobs") == 1


@pytest.mark.parametrize("change, match", [
    ({"out": "/local/folder"}, r"out '/local/folder': nodes share data and output through the store"),
    ({"image": "jetlib:latest"}, r"image 'jetlib:latest': give an explicit, non-latest tag"),
    ({"nodes": 0}, r"nodes must be >= 1, got 0"),
    ({"backend": "mpijob"}, r"backend must be one of trainjob, pytorchjob, got 'mpijob'"),
])
def test_bad_arguments_are_refused_before_anything_is_created(k8s, finished, change, match):
    data, out, _ = finished
    with pytest.raises(ConfigError, match=match):
        launch_pretrain(**{**kwargs(data, out), **change})
    assert k8s.requests == []  # refused before the API server was contacted


def test_sigterm_cancels_and_deletes_the_job(k8s, finished, tmp_path):
    data, out, _ = finished
    k8s.pods = trainjob_pods(job_name(out))
    code = ("import json, sys; from jetlib.launch import launch_pretrain\n"
            "from jetlib.errors import JetlibError\n"
            f"kw = json.loads({json.dumps(json.dumps(kwargs(data, out, poll_s=0.05)))})\n"
            "try:\n    launch_pretrain(**kw)\n"
            "except JetlibError as e:\n    print(e, file=sys.stderr); sys.exit(e.exit_code)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while k8s.calls("POST", "trainjobs") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert k8s.objects, "the job was never created"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 4
    assert f"TrainJob ml/{job_name(out)} cancelled; deleted it" in err
    assert k8s.calls("DELETE", "trainjobs") == 1 and not k8s.objects


def test_gpu_trainjob_requests_gpus_and_carries_scheduling_constraints(k8s, finished):
    data, out, run = finished
    k8s.script = complete_after(2)
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    got = launch_pretrain(**kwargs(data, out, nodes=4, gpus_per_node=2, image="jetlib-cuda:0.1.0",
                                   node_selector={"nvidia.com/gpu.present": "true"}, tolerations=[toleration]))
    assert got == run
    (body,) = k8s.bodies
    validate_custom(body)
    trainer = body["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["image"] == "jetlib-cuda:0.1.0"
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": 2}
    assert trainer["command"][3:5] == ["--nproc-per-node", "2"]  # one process per GPU on each node
    podspec = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]
    assert podspec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert podspec["tolerations"] == [toleration]


def test_no_cluster_configuration_is_one_clear_line(finished, tmp_path, monkeypatch):
    data, out, _ = finished
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(ConfigError, match=r"^no Kubernetes configuration \(in-cluster or kubeconfig\)"):
        launch_pretrain(**kwargs(data, out))
