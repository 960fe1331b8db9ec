#!/usr/bin/env bash
# Build a minimal Debian bookworm base image (Python 3.11 + venv + CA certificates) from Debian's
# packages with debootstrap, for machines that can reach a Debian mirror but no image registry.
#
#   images/build-base.sh [NAME]        (default NAME: jetlib-base:bookworm)
#
# MIRROR defaults to the first Debian URI in this machine's apt sources. If PIP_CERT names a CA
# bundle (registries reached through a TLS-inspecting proxy), that bundle is copied to the same
# path in the image so pip inside `docker build --build-arg PIP_CERT=...` can verify PyPI; a CA
# bundle is public data, nothing secret goes in. Idempotent: an existing NAME is kept unless
# REBUILD=1.
set -euo pipefail
name=${1:-jetlib-base:bookworm}
if [[ ${REBUILD:-0} != 1 ]] && docker image inspect "$name" >/dev/null 2>&1; then
  echo "base image $name exists (REBUILD=1 to rebuild)"; exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap not installed (apt-get install debootstrap)" >&2; exit 1; }
# Active lines only: "URIs: <uri>" (deb822 .sources) or "deb <uri> <suite>" (.list), not comments.
mirror=${MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
  | sed -nE 's#^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?://[^[:space:]]+/debian/?)([[:space:]]|$).*#\3#p' \
  | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
dir=$(mktemp -d /tmp/jetlib-base.XXXXXX)
trap 'rm -rf "$dir"' EXIT
echo "debootstrap bookworm from $mirror into $dir"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$dir" "$mirror" >"$dir.log" 2>&1 \
  || { tail -n 20 "$dir.log" >&2; echo "debootstrap failed (log: $dir.log)" >&2; exit 1; }
rm -f "$dir.log"
# Without PIP_CERT, the host's system bundle: it holds whatever CA the host trusts for the proxy.
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
if [[ -f $cert ]]; then
  mkdir -p "$dir$(dirname "$cert")"
  cp "$cert" "$dir$cert"
fi
# Keep the image small and free of host state: apt lists and caches are not needed at run time.
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
tar -C "$dir" -c . | docker import \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$name" >/dev/null
echo "built base image $name"
