#!/usr/bin/env bash
# Build a jetlib image, tagged with the package version (never "latest").
#
#   images/build.sh cpu|cuda
#
# Environment: BASE_IMAGE (default: python:3.11-slim-bookworm for cpu, a CUDA runtime image for
# cuda; CI passes the debootstrap base from images/build-base.sh), IMAGE_NAME (default jetlib or
# jetlib-cuda), PIP_CERT (CA bundle path inside the base, see build-base.sh), TORCH_INDEX_URL (the
# only index for the torch layer: PyTorch's CPU wheel index makes a CPU image without CUDA libraries;
# default PyPI, whose x86_64 torch needs the nvidia-* wheels to import at all).
# Prints the tag it built on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
flavor=${1:-cpu}
case $flavor in
  cpu) name=${IMAGE_NAME:-jetlib}; base=${BASE_IMAGE:-python:3.11-slim-bookworm} ;;
  cuda) name=${IMAGE_NAME:-jetlib-cuda}; base=${BASE_IMAGE:-nvidia/cuda:13.0.1-runtime-ubuntu22.04} ;;
  *) echo "images/build.sh: flavour must be cpu or cuda, got '$flavor'" >&2; exit 2 ;;
esac
version=$(sed -nE 's/^__version__ = "([^"]+)"/\1/p' jetlib/__init__.py)
[[ -n $version ]] || { echo "images/build.sh: no __version__ in jetlib/__init__.py" >&2; exit 2; }
commit=$(git rev-parse HEAD 2>/dev/null || true)
cert_arg=()
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
# Pass the CA path only when the base image holds that file (build-base.sh copies it there).
if docker run --rm --entrypoint /bin/sh "$base" -c "test -f '$cert'" 2>/dev/null; then
  cert_arg=(--build-arg "PIP_CERT=$cert")
fi
docker build -f images/Dockerfile -t "$name:$version" \
  --build-arg "BASE_IMAGE=$base" --build-arg "FLAVOR=$flavor" --build-arg "VERSION=$version" \
  --build-arg "GIT_COMMIT=$commit" --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL:-}" \
  "${cert_arg[@]}" . >&2
# Each rebuild of the tag leaves the previous image dangling (GBs with torch): drop those of this
# flavour only, nothing else on the machine.
docker image prune -f --filter "label=org.opencontainers.image.title=jetlib-$flavor" >/dev/null
echo "$name:$version"
