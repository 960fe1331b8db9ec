"""jetlib.cluster's launcher against an HTTP double of the Kubernetes API server (tests/k8s_double.py).

The real ``kubernetes`` client and the ``kubeflow`` SDK's TrainerClient talk HTTP to the double, which
applies Kubeflow Trainer v2.3.0's admission webhooks, the apiserver's RBAC and webhook denials and
foreground deletion (each named in tests/k8s_double.py); job bodies they send are validated with the
kubeflow_trainer_api 2.3.0 models (and the full CRD schemas where $JETLIB_CRD_SCHEMAS names them).
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
from jetlib.cluster import SECRET_KEYS, JobRequest, job_name, launch_pretrain, pytorchjob_body
from jetlib.data.store import open_store
from jetlib.errors import ConfigError, TrainingError
from tests.k8s_double import STOCK_RUNTIME, FakeKubernetes, jetlib_runtime, pod
from tests.schemas import schema_folder, validate_crd, validate_custom
from tests.trainer_rules import pet_env

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
    enc = save_object(store, "encoder.pt", {"arch": "resnet15", "config": {}, "state_dict": {"w": torch.arange(4.0)},
                                            "normalize": "scale", "dataset": "0123456789ab"})
    run = {"format": "jetlib.pretrain/2", "encoder": enc, "world_size": 2, "config": {"seed": 0, "method": "simclr"},
           "dataset": {"uri": f"{s3_env}/data", "id": "0123456789ab"}}
    store.put_bytes("run.json", json.dumps(run).encode())
    return f"{s3_env}/data", out, run


def kwargs(data, out, **kw):
    return {"data": data, "out": out, "nodes": 2, "gpus_per_node": 0, "image": "jetlib:0.1.0", "preset": "tiny",
            "augment": "seed", "extra_args": ["--epochs", "1"], "secret": "jetlib-s3", "poll_s": 0.02, **kw}


def trainjob_pods(name: str, **node1) -> list[dict]:
    base = {"jobset.sigs.k8s.io/jobset-name": name, NODE: "node"}
    return [pod(f"{name}-node-0-0", {**base, INDEX: "0"}), pod(f"{name}-node-0-1", {**base, INDEX: "1"}, **node1)]


def deleting_or_gone(fake: FakeKubernetes, name: str) -> bool:
    job = fake.jobs().get(name)
    return job is None or "deletionTimestamp" in job["metadata"]


def complete_after(n: int, plural: str = "trainjobs", ctype: str = "Complete"):
    def script(fake, job):
        if fake.job_gets >= n:
            fake.set_condition(plural, job["metadata"]["name"], ctype, "JobCompleted", "done")
    return script


def test_trainjob_through_sdk_streams_node0_and_returns_run(k8s, finished, capsys):
    """The TrainJob the SDK sends passes Trainer v2.3.0's webhooks (pkg/webhooks/trainjob_webhook.go)
    on jetlib's TrainingRuntime, carries no env and no torchrun flag, and node 0's log is streamed."""
    data, out, run = finished
    name = job_name(out)
    k8s.pods = trainjob_pods(name)
    k8s.logs[f"{name}-node-0-0"] = "epoch 1 loss 4.1\nepoch 2 loss 3.9\n"
    k8s.logs[f"{name}-node-0-1"] = "node 1 must not be streamed\n"
    k8s.script = complete_after(3)

    got = launch_pretrain(**kwargs(data, out))

    assert got == run and k8s.denied == []
    printed = capsys.readouterr().out
    assert "[node-0] epoch 1 loss 4.1" in printed and "[node-0] epoch 2 loss 3.9" in printed
    assert "node 1 must not be streamed" not in printed
    (body,) = k8s.bodies
    validate_custom(body)  # the SDK's body, as sent, fits Kubeflow Trainer v2.3.0's TrainJob
    assert body["metadata"]["name"] == name and body["metadata"]["labels"] == {"app": "jetlib-pretrain"}
    spec = body["spec"]
    assert spec["runtimeRef"] == {"name": "jetlib-torch", "kind": "TrainingRuntime"}
    assert spec["trainer"]["numNodes"] == 2 and spec["trainer"]["image"] == "jetlib:0.1.0"
    assert spec["trainer"]["command"] == [
        "python", "-m", "torch.distributed.run", "-m", "jetlib", "pretrain",
        "--data", data, "--out", out, "--preset", "tiny", "--augment", "seed", "--epochs", "1"]
    assert "runtimePatches" not in spec and "env" not in spec["trainer"]  # no scheduling asked: nothing to patch
    assert "resourcesPerNode" not in spec["trainer"]  # CPU pods keep the runtime's requests
    # what the Trainer's torch plugin then gives each node (pkg/runtime/framework/plugins/torch, EnforceMLPolicy)
    runtime = k8s.objects["trainingruntimes", "ml", "jetlib-torch"]
    assert pet_env(body, runtime, 1) == {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "1",
                                         "PET_MASTER_ADDR": f"{name}-node-0-0.{name}", "PET_MASTER_PORT": "29500"}


def test_jetlib_runtime_passes_the_runtime_webhook_and_fails_on_first_failure(k8s):
    """manifests/base/runtime: accepted by Trainer v2.3.0's TrainingRuntime webhook
    (pkg/webhooks/trainingruntime_webhook.go, validateReplicatedJobs), lossless through the
    kubeflow_trainer_api model, and it overrides the JobSet v0.12.0 defaults that restart a rank in place
    (sigs.k8s.io/jobset pkg/webhooks/jobset_webhook.go Default: restartPolicy OnFailure; Job backoffLimit 6)."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    runtime = jetlib_runtime("ml")
    validate_custom(runtime)
    cfg = client.Configuration()
    config.load_kube_config(config_file=os.environ["KUBECONFIG"], client_configuration=cfg)
    api = client.CustomObjectsApi(client.ApiClient(cfg))
    del k8s.objects["trainingruntimes", "ml", "jetlib-torch"]
    api.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", "ml", "trainingruntimes", runtime)
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert runtime["spec"]["template"]["spec"]["failurePolicy"] == {"maxRestarts": 0}
    assert node["template"]["spec"]["backoffLimit"] == 0
    podspec = node["template"]["spec"]["template"]["spec"]
    assert podspec["restartPolicy"] == "Never"
    (container,) = podspec["containers"]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e} == {
        k: {"name": "jetlib-s3", "key": k} for k in SECRET_KEYS}

    bad = jetlib_runtime("ml")
    bad["metadata"]["name"] = "two-replicas"
    bad["spec"]["template"]["spec"]["replicatedJobs"][0]["replicas"] = 2
    with pytest.raises(ApiException) as err:
        api.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", "ml", "trainingruntimes", bad)
    assert err.value.status == 403
    assert json.loads(err.value.body)["message"] == (
        'admission webhook "validator.trainingruntime.trainer.kubeflow.org" denied the request: '
        "spec.template.spec.replicatedJobs[0].replicas: Invalid value: 2: always must be 1")


def test_env_patch_on_node_container_is_refused_by_the_trainjob_webhook(k8s, finished):
    """What the launcher used to send: the Secret env as a runtime patch of the node container.
    Trainer v2.3.0 refuses it (pkg/runtime/framework/plugins/jobset/jobset.go, JobSet.Validate:
    "must not have envs for the dataset-initializer, model-initializer, node containers"); the 403 is
    the webhook's (controller-runtime pkg/webhook/admission/response.go), not RBAC, and says so."""
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.trainer import CustomTrainerContainer, TrainerClient
    from kubeflow.trainer.options.kubernetes import (
        ContainerPatch,
        JobSetSpecPatch,
        JobSetTemplatePatch,
        JobSpecPatch,
        JobTemplatePatch,
        PodSpecPatch,
        PodTemplatePatch,
        ReplicatedJobPatch,
        RuntimePatch,
        TrainingRuntimeSpecPatch,
    )
    from kubernetes import client, config

    from jetlib.cluster import api_error, secret_env

    env = ContainerPatch(name="node", env=secret_env("jetlib-s3"))
    patch = RuntimePatch(training_runtime_spec=TrainingRuntimeSpecPatch(template=JobSetTemplatePatch(
        spec=JobSetSpecPatch(replicated_jobs=[ReplicatedJobPatch(name="node", template=JobTemplatePatch(
            spec=JobSpecPatch(template=PodTemplatePatch(spec=PodSpecPatch(containers=[env])))))]))))
    cfg = client.Configuration()
    config.load_kube_config(config_file=os.environ["KUBECONFIG"], client_configuration=cfg)
    sdk = TrainerClient(KubernetesBackendConfig(namespace="ml", client_configuration=cfg))
    with pytest.raises(RuntimeError) as err:
        sdk.train(runtime="torch-distributed", trainer=CustomTrainerContainer(image="jetlib:0.1.0", num_nodes=2),
                  options=[patch])
    cause = err.value.__cause__
    assert cause.status == 403
    (message,) = k8s.denied
    assert message.startswith("spec.runtimePatches: Invalid value: ")
    assert message.endswith(": must not have envs for the dataset-initializer, model-initializer, node containers")
    line = str(api_error(cause, "create trainjobs.trainer.kubeflow.org", "ml"))
    assert line.startswith("the API server refused to create trainjobs.trainer.kubeflow.org in namespace ml "
                           '(403): admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: ')
    assert "must not have envs" in line and "RBAC" not in line and "\n" not in line
    assert not k8s.jobs()


def test_a_webhook_refusal_of_the_launchers_job_is_shown_not_called_rbac(k8s, finished):
    """A runtime whose trainer job is not named "node": the launcher's scheduling patch names a
    replicated job the runtime lacks, which JobSet.Validate refuses; the user sees that message."""
    data, out, _ = finished
    other = jetlib_runtime("ml")
    other["metadata"]["name"] = "renamed"
    other["spec"]["template"]["spec"]["replicatedJobs"][0]["name"] = "trainer"
    k8s.objects["trainingruntimes", "ml", "renamed"] = other
    with pytest.raises(ConfigError) as err:
        launch_pretrain(**kwargs(data, out, runtime="renamed", secret=None, node_selector={"pool": "cpu"}))
    line = str(err.value)
    assert line.startswith('the API server refused to create trainjobs.trainer.kubeflow.org in namespace ml (403): '
                           'admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: '
                           "spec.runtimePatches: Invalid value: ")
    assert line.endswith("must not have replicated job that doesn't exist in the runtime job template")
    assert err.value.exit_code == 2 and not k8s.jobs()


def test_missing_runtime_or_one_without_the_secret_is_one_line_before_submitting(k8s, finished):
    data, out, _ = finished
    runtime = k8s.objects.pop(("trainingruntimes", "ml", "jetlib-torch"))
    with pytest.raises(ConfigError, match=r"^no TrainingRuntime 'jetlib-torch' in namespace ml: apply "
                                          r"manifests/base/runtime"):
        launch_pretrain(**kwargs(data, out))
    k8s.objects["trainingruntimes", "ml", "jetlib-torch"] = runtime
    with pytest.raises(ConfigError, match=r"^TrainingRuntime 'jetlib-torch': its node container must read "
                                          r"JETLIB_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY from "
                                          r"Secret 'other-secret'"):
        launch_pretrain(**kwargs(data, out, secret="other-secret"))
    assert k8s.calls("POST", "trainjobs") == 0


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
    assert k8s.calls("DELETE", "trainjobs") == 1 and deleting_or_gone(k8s, job_name(out))


def test_timeout_deletes_the_job_and_reports_unschedulable(k8s, finished):
    data, out, _ = finished
    k8s.pods = trainjob_pods(job_name(out), unschedulable=True)
    start = time.monotonic()
    with pytest.raises(TrainingError, match=r"did not finish within 0.5 s \(last problem: .*unschedulable: 0/3"):
        launch_pretrain(**kwargs(data, out, timeout_s=0.5))
    assert time.monotonic() - start < 10
    assert k8s.calls("DELETE", "trainjobs") == 1 and deleting_or_gone(k8s, job_name(out))


def test_rbac_denied_is_one_line_naming_the_verb(k8s, finished):
    """The authorizer's 403 (k8s.io/apiserver pkg/endpoints/handlers/responsewriters/errors.go,
    forbiddenMessage) is reported as RBAC, with the apiserver's message."""
    data, out, _ = finished
    k8s.forbid.add(("POST", "trainjobs"))
    with pytest.raises(ConfigError) as err:
        launch_pretrain(**kwargs(data, out))
    line = str(err.value)
    assert line.startswith("RBAC denied: this service account cannot create trainjobs.trainer.kubeflow.org in "
                           "namespace ml; grant it with manifests/base/rbac")
    assert line.endswith('(trainjobs.trainer.kubeflow.org is forbidden: User '
                         '"system:serviceaccount:ml:pipeline-runner" cannot create resource "trainjobs" '
                         'in API group "trainer.kubeflow.org" in the namespace "ml")')
    assert not k8s.jobs()


def test_resubmission_attaches_to_running_job_and_replaces_failed_one(k8s, finished):
    data, out, run = finished
    name = job_name(out)
    k8s.objects[("trainjobs", "ml", name)] = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
                                              "metadata": {"name": name, "namespace": "ml", "uid": "old"},
                                              "spec": {}}
    k8s.script = complete_after(3)
    assert launch_pretrain(**kwargs(data, out)) == run
    assert k8s.calls("POST", "trainjobs") == 0  # attached, did not start a second job

    k8s.set_condition("trainjobs", name, "Failed", "Preempted", "node lost")
    k8s.job_gets, k8s.script = 0, complete_after(4)
    assert launch_pretrain(**kwargs(data, out)) == run
    assert k8s.calls("DELETE", "trainjobs") == 1 and k8s.calls("POST", "trainjobs") == 1
    assert k8s.jobs()[name]["metadata"]["uid"] != "old"


def test_replacing_a_failed_job_waits_until_its_foreground_deletion_ends(k8s, finished):
    """A foreground delete leaves the TrainJob, with a deletionTimestamp and the foregroundDeletion
    finalizer, until its pods are gone (k8s.io/kubernetes pkg/controller/garbagecollector, foreground
    mode); a create of the same name before then is 409 AlreadyExists. The launcher waits it out."""
    data, out, run = finished
    name = job_name(out)
    k8s.pods = trainjob_pods(name)
    k8s.objects[("trainjobs", "ml", name)] = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": name, "namespace": "ml", "uid": "old"}, "spec": {},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "TrainingFailed"}]}}
    k8s.deletion_ticks = 8
    seen = []

    def script(fake, job):
        seen.append((job["metadata"]["uid"], "deletionTimestamp" in job["metadata"],
                     "foregroundDeletion" in job["metadata"].get("finalizers", [])))
        if job["metadata"]["uid"] != "old" and sum(1 for u, *_ in seen if u != "old") >= 2:
            fake.set_condition("trainjobs", name, "Complete", "JobCompleted", "done")
    k8s.script = script
    assert launch_pretrain(**kwargs(data, out, poll_s=0.01)) == run
    assert ("old", True, True) in seen  # it was seen terminating, and waited for
    assert k8s.calls("POST", "trainjobs") == 1 and k8s.jobs()[name]["metadata"]["uid"] != "old"
    assert all(p["metadata"]["name"].startswith(name) is False for p in k8s.pods)  # the old pods went with it


def test_a_job_still_being_deleted_is_waited_for_then_created_anew(k8s, finished):
    data, out, run = finished
    name = job_name(out)
    k8s.pods = trainjob_pods(name)
    key = ("trainjobs", "ml", name)
    k8s.objects[key] = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
                        "metadata": {"name": name, "namespace": "ml", "uid": "old"}, "spec": {}}
    k8s._delete(key, "Foreground")  # a cancelled run's job, pods still terminating
    k8s.script = lambda fake, job: job["metadata"]["uid"] != "old" and fake.set_condition(
        "trainjobs", name, "Complete", "JobCompleted", "done")
    assert launch_pretrain(**kwargs(data, out)) == run
    assert k8s.calls("POST", "trainjobs") == 1 and k8s.calls("DELETE", "trainjobs") == 0


def test_crash_looping_rank_fails_the_launch_at_once(k8s, finished):
    """A runtime that restarts containers in place (JobSet's default restartPolicy OnFailure) leaves
    a crashed rank in CrashLoopBackOff while its peers wait: fail now, not after grace_s."""
    data, out, _ = finished
    name = job_name(out)
    k8s.pods = trainjob_pods(name, waiting="CrashLoopBackOff", restarts=3)
    with pytest.raises(TrainingError) as err:
        launch_pretrain(**kwargs(data, out, grace_s=3600))
    line = str(err.value)
    assert line == (f"TrainJob ml/{name}: pod {name}-node-0-1: container node is crash-looping (CrashLoopBackOff, "
                    "3 restart(s), last exit code 1); a rank restarted in place hangs its peers, so the job is "
                    "stopped")
    assert k8s.calls("DELETE", "trainjobs") == 1 and "deletionTimestamp" in k8s.jobs()[name]["metadata"]


def test_node0_log_is_read_from_its_current_pod_and_across_restarts(k8s, finished, capsys):
    """After a JobSet restart the old node-0 pod can still be listed, terminating, beside the new one
    (JobSet labels each attempt jobset.sigs.k8s.io/restart-attempt); the log comes from the new one,
    and when its container restarts the new container's log is followed too."""
    data, out, run = finished
    name = job_name(out)
    base = {"jobset.sigs.k8s.io/jobset-name": name, NODE: "node", INDEX: "0"}
    new = pod(f"{name}-node-0-0-b", {**base, "jobset.sigs.k8s.io/restart-attempt": "1"},
              created="2026-01-01T00:05:00Z")
    k8s.pods = [new, pod(f"{name}-node-0-0-a", {**base, "jobset.sigs.k8s.io/restart-attempt": "0"}, deleting=True)]
    k8s.logs[f"{name}-node-0-0-a"] = "old attempt must not be streamed\n"
    k8s.logs[f"{name}-node-0-0-b"] = ["container 0: epoch 1\n", "container 1: resumed at epoch 2\n"]

    def script(fake, job):
        if fake.job_gets == 4:  # node 0's container restarts in place
            status = new["status"]["containerStatuses"][0]
            status["restartCount"] = 1
            status["containerID"] = "containerd://second"
        if fake.job_gets >= 10:
            fake.set_condition("trainjobs", name, "Complete", "JobCompleted", "done")
    k8s.script = script
    assert launch_pretrain(**kwargs(data, out, poll_s=0.05)) == run
    printed = capsys.readouterr().out
    assert "[node-0] container 0: epoch 1" in printed and "[node-0] container 1: resumed at epoch 2" in printed
    assert "old attempt" not in printed


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
    code = ("import json, sys; from jetlib.cluster import launch_pretrain\n"
            "from jetlib.errors import JetlibError\n"
            f"kw = json.loads({json.dumps(json.dumps(kwargs(data, out, poll_s=0.05)))})\n"
            "try:\n    launch_pretrain(**kw)\n"
            "except JetlibError as e:\n    print(e, file=sys.stderr); sys.exit(e.exit_code)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while k8s.calls("POST", "trainjobs") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert k8s.jobs(), "the job was never created"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 4
    assert f"TrainJob ml/{job_name(out)} cancelled; deleted it" in err
    # foreground: the job stays, terminating, until its pods are gone; the step does not wait for that
    meta = k8s.jobs()[job_name(out)]["metadata"]
    assert k8s.calls("DELETE", "trainjobs") == 1 and meta["finalizers"] == ["foregroundDeletion"]
    assert all("deletionTimestamp" in p["metadata"] for p in k8s.pods)


def test_gpu_workers_get_a_gpu_nodes_resources_and_the_gpu_steps_scheduling(k8s, finished):
    """Kubeflow Trainer v2.3.0 merges ``trainer.resourcesPerNode`` into the runtime's ``node`` container
    key by key (pkg/runtime/core/trainingruntime.go, newRuntimeInfo -> pkg/util/trainingruntime,
    MergeResourceRequirements; tests/trainer_rules.py, merge_resources): GPUs alone would leave a GPU
    worker the runtime's CPU limit of 2 and 4 GiB. The workers also get the pipeline's GPU node
    selector and toleration by default."""
    from jetlib.cluster import CPU_PER_GPU, GPU_NODE_SELECTOR, GPU_TOLERATION, MEMORY_GI_PER_GPU
    from tests.trainer_rules import node_pod

    data, out, run = finished
    k8s.script = complete_after(2)
    k8s.jobset_controller = True
    got = launch_pretrain(**kwargs(data, out, nodes=4, gpus_per_node=2, image="jetlib-cuda:0.1.0"))
    assert got == run
    (body,) = k8s.bodies
    validate_custom(body)
    trainer = body["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["image"] == "jetlib-cuda:0.1.0"
    cpu, memory = str(2 * CPU_PER_GPU), f"{2 * MEMORY_GI_PER_GPU}Gi"
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": 2, "cpu": cpu, "memory": memory},
                                           "requests": {"nvidia.com/gpu": 2, "cpu": cpu, "memory": memory}}
    assert not any(a.startswith("--nproc") for a in trainer["command"])
    runtime = k8s.objects["trainingruntimes", "ml", "jetlib-torch"]
    # one process per visible GPU on each node: the torch plugin's "auto" with a GPU request
    assert pet_env(body, runtime, 3)["PET_NPROC_PER_NODE"] == "auto"
    assert k8s.denied == [] and k8s.events == []
    # what each worker pod asks for once the Trainer has merged: the job's keys, not the runtime's 2 CPUs
    pods = [p for p in k8s.pods if p["metadata"]["labels"].get(INDEX) is not None]
    assert len(pods) == 4
    for p in pods:
        (c,) = p["spec"]["containers"]
        assert c["resources"] == trainer["resourcesPerNode"]
        assert p["spec"]["nodeSelector"] == GPU_NODE_SELECTOR and p["spec"]["tolerations"] == [GPU_TOLERATION]
    # a key the job does not name keeps the runtime's value (merge, not replacement)
    half = {**body, "spec": {**body["spec"], "trainer": {**trainer, "resourcesPerNode": {
        "limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 1}}}}}
    (c,) = node_pod(half, runtime, 0)["spec"]["containers"]
    assert c["resources"] == {"limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": 1},
                              "requests": {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": 1}}


def test_explicit_scheduling_constraints_replace_the_gpu_defaults(k8s, finished):
    data, out, run = finished
    k8s.script = complete_after(2)
    toleration = {"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
    launch_pretrain(**kwargs(data, out, gpus_per_node=1, image="jetlib-cuda:0.1.0", node_selector={"pool": "a100"},
                             tolerations=[toleration]))
    podspec = k8s.bodies[0]["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert podspec["nodeSelector"] == {"pool": "a100"} and podspec["tolerations"] == [toleration]
    k8s.bodies.clear()
    with pytest.raises(ConfigError, match="no finished run there"):  # the job ran; nothing was written
        launch_pretrain(**kwargs(data, f"{out}2", gpus_per_node=0))
    assert "runtimePatches" not in k8s.bodies[0]["spec"]  # CPU pods: no GPU constraint


def test_no_cluster_configuration_is_one_clear_line(finished, tmp_path, monkeypatch):
    data, out, _ = finished
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(ConfigError, match=r"^no Kubernetes configuration \(in-cluster or kubeconfig\)"):
        launch_pretrain(**kwargs(data, out))


def test_bodies_and_runtimes_fit_the_full_crd_schemas(k8s, finished):
    """The full OpenAPI schemas of the Trainer v2.3.0 and Training Operator v1.9.4 CRDs add enums,
    minimums and required fields the kubeflow_trainer_api models lack. They are read from the folder
    $JETLIB_CRD_SCHEMAS names (.ci/run sets it; CI=true fails without it, elsewhere this skips)."""
    schema_folder()
    data, out, _ = finished
    k8s.script = complete_after(2)
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    launch_pretrain(**kwargs(data, out, node_selector={"pool": "cpu"}, tolerations=[toleration]))
    req = JobRequest(data=data, out=out, nodes=3, gpus_per_node=0, image="jetlib:0.1.0", preset="tiny",
                     augment="seed", namespace="ml")
    for obj in (*k8s.bodies, pytorchjob_body(req, "j"), jetlib_runtime("ml"), STOCK_RUNTIME):
        validate_crd(obj)
