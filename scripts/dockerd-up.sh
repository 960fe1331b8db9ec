#!/usr/bin/env bash
# Start a Docker engine in the background if none answers, and wait until it does.
# Idempotent: a running engine is left alone. Log: ${DOCKERD_LOG:-/tmp/dockerd.log}.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { echo "dockerd not installed (apt-get install docker.io)" >&2; exit 1; }
log=${DOCKERD_LOG:-/tmp/dockerd.log}
# No systemd in CI containers: run the daemon detached from this shell so it outlives it.
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "dockerd did not answer within 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
