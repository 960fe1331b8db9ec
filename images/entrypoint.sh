#!/bin/sh
# The image's entrypoint: `docker run IMAGE <step> ...` runs `jetlib <step> ...`.
# A first argument that is a program on PATH (sh, python3, torchrun: what KFP's launcher and
# kfp.local.DockerRunner send as the container command) runs as given, so the same image serves
# `docker run`, Kubernetes and kfp.local without an --entrypoint override. No jetlib step is
# named like a program.
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ] && command -v "$1" >/dev/null 2>&1; then
  exec "$@"
fi
exec jetlib "$@"
