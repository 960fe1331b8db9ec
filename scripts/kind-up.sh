#!/usr/bin/env bash
# make kind-up: a kind cluster with KFP 2.17.0 standalone (its SeaweedFS is the one S3 store),
# Kubeflow Trainer v2.3.0, jetlib's TrainingRuntime, credentials and RBAC, and the jetlib CPU image
# loaded into the worker nodes (tag = package version, never latest; pods use IfNotPresent).
# Idempotent: re-running skips what exists. Needs docker, kind (KIND_VERSION, default v0.32.0, as KFP
# 2.17.0's CI), kubectl, and the image built first (make images FLAVORS=cpu).
# The kind node image is pulled as KFP's CI pulls it (kubeflow/pipelines .github/actions/create-cluster,
# .github/resources/scripts/docker-pull-with-retry.sh): three tries 20 s apart, then the same digest from
# kind's own registry (KIND_NODE_FALLBACK), and it is kept as an archive in KIND_NODE_CACHE (default
# ~/.cache/jetlib/kind) so the next cluster needs no pull; CI caches that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${KIND_CLUSTER:-jetlib}
kind_version=${KIND_VERSION:-v0.32.0}
node_cache=${KIND_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetlib/kind}
node_fallback=${KIND_NODE_FALLBACK:-gcr.io/k8s-staging-kind/node}
pull_wait=${KIND_PULL_WAIT:-20}
version=$(sed -nE 's/^__version__ = "([^"]+)"/\1/p' jetlib/__init__.py)
image=${JETLIB_IMAGE:-jetlib:$version}
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool is not installed" >&2; exit 2; }
done
# The node image digest in manifests/kind/cluster.yaml is the one this kind release was built with.
have=$(kind version | awk '{print $2}')
[[ $have == "$kind_version" ]] || { echo "kind-up: kind $kind_version expected, found $have (KIND_VERSION=...)" >&2; exit 2; }
docker image inspect "$image" >/dev/null 2>&1 || { echo "kind-up: image $image not built (make images FLAVORS=cpu)" >&2; exit 2; }
config=$(mktemp /tmp/jetlib-kind.XXXXXX.yaml)
archive=$(mktemp /tmp/jetlib-image.XXXXXX.tar)
trap 'rm -f "$config" "$archive"' EXIT

# The node image cluster.yaml pins (one, by digest), made present locally under its tag: from the
# cache, or pulled by digest (Docker Hub, then the fallback), so its content is the pinned one either way.
node_image=$(sed -nE 's/^ +image: (kindest\/node:[^@ ]+@sha256:[0-9a-f]{64})$/\1/p' manifests/kind/cluster.yaml | sort -u)
[[ -n $node_image && $(wc -l <<<"$node_image") == 1 ]] || { echo "kind-up: manifests/kind/cluster.yaml must pin one kindest/node image by digest" >&2; exit 2; }
node_tag=${node_image%@*} node_digest=${node_image#*@}
node_archive="$node_cache/node-${node_tag##*:}-${node_digest:7:12}.tar"
pull_retry() {
  for try in 1 2 3; do
    docker pull "$1" && return 0
    [[ $try == 3 ]] || { echo "kind-up: pulling $1 failed (try $try of 3), retrying in ${pull_wait} s" >&2; sleep "$pull_wait"; }
  done
  return 1
}
if docker image inspect "$node_image" >/dev/null 2>&1; then
  docker tag "$node_image" "$node_tag"
elif [[ -f $node_archive ]] && docker load -i "$node_archive" >/dev/null; then
  echo "kind-up: node image $node_tag from the cache $node_archive"
else
  got=""
  for ref in "$node_image" "$node_fallback:${node_tag##*:}@$node_digest"; do
    if pull_retry "$ref"; then got=$ref; break; fi
    echo "kind-up: could not pull $ref" >&2
  done
  [[ -n $got ]] || { echo "kind-up: node image $node_image could not be pulled from Docker Hub or $node_fallback" >&2; exit 1; }
  docker tag "$got" "$node_tag"
  mkdir -p "$node_cache"
  docker save -o "$node_archive.part" "$node_tag" && mv "$node_archive.part" "$node_archive"
fi
# kind reads the tag (an image loaded from an archive has no registry digest to match)
sed "s|$node_image|$node_tag|" manifests/kind/cluster.yaml >"$config"

# Cluster creation fails now and then on shared CI runners (kubelet start timeouts): retry from
# scratch, as KFP's own CI does (kubeflow/pipelines .github/actions/create-cluster).
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  for attempt in 1 2 3; do
    kind create cluster --name "$cluster" --config "$config" --wait 180s && break
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
    [[ $attempt == 3 ]] && { echo "kind-up: cluster creation failed 3 times" >&2; exit 1; }
    echo "kind-up: cluster creation failed (attempt $attempt), retrying" >&2; sleep 10
  done
fi
k=(kubectl --context "kind-$cluster")

echo "== store credentials: one random key pair for KFP's SeaweedFS and the jetlib-s3 Secret"
if [[ ! -f manifests/kind/s3.env || ! -f manifests/platform/kfp/kfp-s3.env ]]; then
  # written by Python so the password never appears on a command line or in the log
  python3 - <<'PY'
import pathlib, secrets
key = secrets.token_urlsafe(24)
src = pathlib.Path("manifests/kind/s3.env.example").read_text()
user = next(l.split("=", 1)[1] for l in src.splitlines() if l.startswith("AWS_ACCESS_KEY_ID="))
for path, text in ((pathlib.Path("manifests/kind/s3.env"), src.replace("=replace-me", "=" + key)),
                   (pathlib.Path("manifests/platform/kfp/kfp-s3.env"), f"accesskey={user}\nsecretkey={key}\n")):
    path.write_text(text)
    path.chmod(0o600)
PY
fi

echo "== Kubeflow Pipelines 2.17.0 (standalone, SeaweedFS)"
"${k[@]}" apply -k manifests/platform/kfp-cluster-scoped
"${k[@]}" wait --for condition=established --timeout=120s crd/applications.app.k8s.io
"${k[@]}" apply -k manifests/platform/kfp

echo "== Kubeflow Trainer v2.3.0 and JobSet"
"${k[@]}" apply --server-side -k manifests/platform/trainer
"${k[@]}" -n kubeflow-system wait --for=condition=available --timeout=600s deployment --all
# the runtimes' admission webhook needs the controller up; retry while it starts serving
for i in 1 2 3 4 5 6; do
  "${k[@]}" apply --server-side -k manifests/platform/trainer-runtimes && break
  [[ $i == 6 ]] && exit 1; sleep 10
done

echo "== jetlib: TrainingRuntime, credentials Secret, launcher RBAC"
# jetlib's TrainingRuntime goes through the Trainer's validating webhook: retry while it starts
for i in 1 2 3 4 5 6; do
  "${k[@]}" apply -k manifests/kind && break
  [[ $i == 6 ]] && exit 1; sleep 10
done

echo "== loading $image into the worker nodes"
# A single-platform archive, not `kind load docker-image`: that one fails with "content digest ...
# not found" under Docker's containerd image store (kubernetes-sigs/kind#3795; the workaround kind
# documents in #4247). Only the workers run jetlib pods, so the control plane gets no copy.
workers=$(kind get nodes --name "$cluster" | grep -v control-plane | sort | paste -sd, -)
platform=()
docker save --help 2>/dev/null | grep -q -- --platform && platform=(--platform "linux/$(docker info -f '{{.Architecture}}' | sed 's/x86_64/amd64/;s/aarch64/arm64/')")
docker save "${platform[@]}" -o "$archive" "$image"
kind load image-archive "$archive" --name "$cluster" --nodes "$workers"

"${k[@]}" -n kubeflow wait --for=condition=available --timeout=900s deployment --all
echo "kind cluster $cluster is ready: KFP UI via kubectl --context kind-$cluster -n kubeflow port-forward svc/ml-pipeline-ui 8080:80"
