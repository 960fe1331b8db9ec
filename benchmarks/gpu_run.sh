#!/usr/bin/env bash
# The one device call that measures the GPU path: benchmarks/gpu.py on a lent GPU, JSON lines into $OUT/gpu.jsonl.
#
# Beforehand, here (no GPU; ~20 min of 2 cores for the simulation, ~20 MB of shards):
#   .venv/bin/jetlib simulate --n-jets 20000 --seed 0 --out .cache/gpu-data/sim-20000.h5
#   .venv/bin/jetlib ingest .cache/gpu-data/sim-20000.h5 --store .cache/gpu-data/store
# Then one call of the device tool, carrying only the ingested store (the HDF5 file stays here):
#   run(command="bash benchmarks/gpu_run.sh", carry=[".cache/gpu-data/store"], timeout_s=560)
# GPU_ARGS adds flags to gpu.py (GPU_ARGS=--smoke tries this script on a CPU). The GPU machine needs only torch, numpy, pyarrow, h5py and scikit-learn: no pip, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
STORE=${JETLIB_GPU_STORE:-.cache/gpu-data/store}
DATA=$(ls -d "$STORE"/datasets/*/ 2>/dev/null | head -n 1)
if [ -z "$DATA" ]; then
  echo "gpu_run.sh: no dataset under $STORE/datasets (make it first: see the top of this file)" >&2
  exit 2
fi
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
SCRATCH=$(mktemp -d)
export PYTHONPATH="$PWD" JETLIB_PROGRESS=0 JETLIB_CACHE="$SCRATCH/cache"
# 450 s of measurements (the script skips what would start later), then the summary; 520 s hard stop
status=0
timeout 520 "$PY" benchmarks/gpu.py --data "$DATA" --out "$SCRATCH" --budget-s 450 --seconds 5 ${GPU_ARGS:-} \
  > >(tee "$OUT/gpu.jsonl") 2> "$OUT/gpu.stderr" || status=$?
cp "$SCRATCH/pretrain.log" "$OUT/" 2>/dev/null || true
rm -rf "$SCRATCH"  # checkpoints and models stay on the machine: only the figures come back
tail -n 40 "$OUT/gpu.stderr" >&2 || true
exit $status
