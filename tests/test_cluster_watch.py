"""What the launcher's watch loop (jetlib/cluster/watch.py) sees and how soon it gives up, against the
API-server double (tests/k8s_double.py) with its Job controller on: pods are created from the TrainJob
as Trainer v2.3.0, JobSet v0.12.0 and the Job controller create them, through the API server's pod
strategy and validation, and a refused creation is a ``FailedCreate`` event on the Job."""

from __future__ import annotations

import copy
import json
import os
import time

import pytest
import yaml

from jetlib.cluster import job_name, launch_pretrain
from jetlib.errors import TrainingError
from tests import test_cluster_launch
from tests.k8s_double import JETLIB_RUNTIME_FILE, pod
from tests.test_cluster_launch import complete_after, deleting_or_gone, kwargs, trainjob_pods

k8s, finished = test_cluster_launch.k8s, test_cluster_launch.finished  # the same fixtures: the double, a finished run
pytestmark = pytest.mark.s3  # the finished run lives in the test store, as in tests/test_cluster_launch.py

NAME_KEY = "jobset.sigs.k8s.io/jobset-name"


def duplicated_key_runtime() -> dict:
    """jetlib's runtime as it was: the JobSet name key both in labelSelector and in matchLabelKeys."""
    runtime = yaml.safe_load(JETLIB_RUNTIME_FILE.read_text())
    runtime["metadata"]["namespace"] = "ml"
    spec = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    term["labelSelector"] = {"matchExpressions": [{"key": NAME_KEY, "operator": "Exists"}]}
    return runtime


def test_a_key_in_both_selector_and_match_label_keys_is_refused_at_pod_creation(k8s, finished):
    """k8s.io/kubernetes v1.33: pkg/registry/core/pod/strategy.go (mutatePodAffinity) merges
    matchLabelKeys into the selector at creation, then pkg/apis/core/validation/validation.go
    (validateMatchLabelKeysAndMismatchLabelKeys) refuses the key it now finds twice. The Job controller
    records ``FailedCreate`` on the Job (pkg/controller/controller_utils.go, createPods) and no pod exists;
    the watcher fails the step at its next poll, in one line naming the Job and the reason, and
    deletes the job. jetlib's runtime as shipped creates every pod, one per node."""
    data, out, _ = finished
    name = job_name(out)
    k8s.jobset_controller = True
    k8s.objects["trainingruntimes", "ml", "jetlib-torch"] = duplicated_key_runtime()
    start = time.monotonic()
    with pytest.raises(TrainingError) as err:
        launch_pretrain(**kwargs(data, out, poll_s=0.05))
    assert time.monotonic() - start < 10
    line = str(err.value)
    assert line.startswith(f"TrainJob ml/{name}: Job ml/{name}-node-0: FailedCreate: Error creating: "
                           f'Pod "{name}-node-0-0-')
    assert line.endswith(' is invalid: spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution'
                         f'[0][0]: Invalid value: "{NAME_KEY}": exists in both matchLabelKeys and labelSelector')
    assert "\n" not in line and err.value.exit_code == 4
    assert k8s.pods == [] and k8s.calls("DELETE", "trainjobs") == 1 and deleting_or_gone(k8s, name)
    assert [e["involvedObject"]["kind"] for e in k8s.events] == ["Job", "Job"]  # one per refused pod

    # the runtime as shipped: every pod is created, and its merged anti-affinity names only its own JobSet
    k8s.objects.pop(("trainjobs", "ml", name), None)
    k8s.events.clear()
    k8s.objects["trainingruntimes", "ml", "jetlib-torch"] = yaml.safe_load(JETLIB_RUNTIME_FILE.read_text())
    k8s.script = complete_after(2)
    launch_pretrain(**kwargs(data, out, poll_s=0.05))
    assert k8s.events == [] and len(k8s.pods) == 2
    for p in k8s.pods:
        (term,) = p["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"] == {"matchLabels": {"app.kubernetes.io/name": "jetlib-pretrain"},
                                         "matchExpressions": [{"key": NAME_KEY, "operator": "In", "values": [name]}]}
        assert p["metadata"]["labels"]["app.kubernetes.io/name"] == "jetlib-pretrain"


def test_the_double_answers_pod_creation_and_event_lists_as_the_api_server(k8s):
    """The same rule through the REST path (422 Invalid, apimachinery NewInvalid's message), and an
    Event list whose field selector names a field Events do not declare is 400 (pkg/registry/core/
    event/strategy.go, ToSelectableFields)."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    cfg = client.Configuration()
    config.load_kube_config(config_file=os.environ["KUBECONFIG"], client_configuration=cfg)
    core = client.CoreV1Api(client.ApiClient(cfg))
    spec = duplicated_key_runtime()["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {NAME_KEY: "j"}},
            "spec": copy.deepcopy(spec["spec"])}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("ml", body)
    assert err.value.status == 422 and json.loads(err.value.body)["message"].startswith('Pod "p" is invalid: ')
    body["metadata"]["labels"] = {}  # no value to merge: the selector holds the key once
    assert core.create_namespaced_pod("ml", body).metadata.name == "p"
    with pytest.raises(ApiException) as err:
        core.list_namespaced_event("ml", field_selector="involvedObject.colour=red")
    assert err.value.status == 400
    assert core.list_namespaced_event("ml", field_selector="reason=FailedCreate").items == []


def test_unschedulable_fails_after_the_pending_deadline_not_the_timeout(k8s, finished):
    data, out, _ = finished
    name = job_name(out)
    k8s.pods = trainjob_pods(name, unschedulable=True)
    start = time.monotonic()
    with pytest.raises(TrainingError) as err:
        launch_pretrain(**kwargs(data, out, pending_s=0.3, timeout_s=3600))
    assert time.monotonic() - start < 10
    assert str(err.value) == (f"TrainJob ml/{name}: pod {name}-node-0-1: unschedulable: 0/3 nodes are available: "
                              "3 Insufficient nvidia.com/gpu. (for more than 0.3 s)")
    assert k8s.calls("DELETE", "trainjobs") == 1


def test_an_image_pull_failure_fails_within_the_grace(k8s, finished):
    data, out, _ = finished
    name = job_name(out)
    k8s.pods = [pod(f"{name}-node-0-0", {NAME_KEY: name}, phase="Pending", waiting="ErrImagePull")]
    with pytest.raises(TrainingError, match=rf"^TrainJob ml/{name}: pod {name}-node-0-0: image pull failed "
                                            r"\(ErrImagePull\) for jetlib:0.1.0: .* \(for more than 0.2 s\)$"):
        launch_pretrain(**kwargs(data, out, grace_s=0.2, timeout_s=3600))
    assert deleting_or_gone(k8s, name)


def test_the_defaults_are_a_day_fifteen_minutes_and_under_a_minute():
    import inspect

    from jetlib.cluster import GRACE_S, PENDING_S, TIMEOUT_S

    params = inspect.signature(launch_pretrain).parameters
    assert (params["timeout_s"].default, params["pending_s"].default, params["grace_s"].default) == \
        (TIMEOUT_S, PENDING_S, GRACE_S) == (86400.0, 900.0, 45.0)


def test_a_role_without_events_watches_the_pods_and_says_so(k8s, finished, capsys):
    """A launcher Role from before Jobs and Events were read: the authorizer's 403 on the list (as the
    double answers it, k8s.io/apiserver responsewriters/errors.go forbiddenMessage) is said once, and the
    launch goes on watching the pods."""
    data, out, run = finished
    k8s.forbid.add(("GET", "jobs"))
    k8s.script = complete_after(4)
    assert launch_pretrain(**kwargs(data, out)) == run
    err = capsys.readouterr().err
    assert err.count("cannot list jobs.batch or events in namespace ml") == 1
