#!/usr/bin/env bash
# make kind-up: a kind cluster with KFP 2.17.0 standalone, Kubeflow Trainer v2.3.0, jetlib's MinIO
# and RBAC, and the jetlib CPU image loaded (tag = package version, never latest, so pods use it
# with imagePullPolicy IfNotPresent). Idempotent: re-running skips what exists.
# Needs: docker, kind, kubectl; the image built first (make images FLAVORS=cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${KIND_CLUSTER:-jetlib}
version=$(sed -nE 's/^__version__ = "([^"]+)"/\1/p' jetlib/__init__.py)
image=${JETLIB_IMAGE:-jetlib:$version}
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool is not installed" >&2; exit 2; }
done
docker image inspect "$image" >/dev/null 2>&1 || { echo "kind-up: image $image not built (make images FLAVORS=cpu)" >&2; exit 2; }

kind get clusters 2>/dev/null | grep -qx "$cluster" \
  || kind create cluster --name "$cluster" --config manifests/kind/cluster.yaml --wait 180s
k=(kubectl --context "kind-$cluster")

echo "== Kubeflow Pipelines 2.17.0 (standalone)"
"${k[@]}" apply -k manifests/platform/kfp-cluster-scoped
"${k[@]}" wait --for condition=established --timeout=120s crd/applications.app.k8s.io
"${k[@]}" apply -k manifests/platform/kfp

echo "== Kubeflow Trainer v2.3.0"
"${k[@]}" apply --server-side -k manifests/platform/trainer
"${k[@]}" -n kubeflow-system wait --for=condition=available --timeout=600s deployment --all
# the runtimes' admission webhook needs the controller up; retry while it starts serving
for i in 1 2 3 4 5 6; do
  "${k[@]}" apply --server-side -k manifests/platform/trainer-runtimes && break
  [[ $i == 6 ]] && exit 1; sleep 10
done

echo "== jetlib: MinIO, credentials Secret, launcher RBAC"
if [[ ! -f manifests/kind/s3.env ]]; then
  # a fresh random password, written by Python so it never appears on a command line
  python3 - <<'PY'
import pathlib, secrets
src = pathlib.Path("manifests/kind/s3.env.example").read_text()
dst = pathlib.Path("manifests/kind/s3.env")
dst.write_text(src.replace("AWS_SECRET_ACCESS_KEY=replace-me", "AWS_SECRET_ACCESS_KEY=" + secrets.token_urlsafe(24)))
dst.chmod(0o600)
PY
fi
"${k[@]}" apply -k manifests/kind

echo "== loading $image into the cluster's nodes"
kind load docker-image "$image" --name "$cluster"

"${k[@]}" -n kubeflow wait --for=condition=available --timeout=900s deployment --all
echo "kind cluster $cluster is ready: KFP UI via kubectl --context kind-$cluster -n kubeflow port-forward svc/ml-pipeline-ui 8080:80"
