"""The cpu preset's levers on one SimCLR pretraining step: CPU seconds per step. Prints one JSON line.

The cpu preset's network (ResNet-15 ``cpu`` width) and batch (64 jets, two views), one optimizer step,
in fp32 (the baseline, measured in the same run), bf16 autocast, channels-last, both, and fp32 on a
64x64 central crop. CPU time (``time.process_time``), one thread by default: on a machine shared with
other jobs, a second OpenMP thread spin-waits and its CPU time measures the load, not the step.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cpu_step.py --steps 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import ROOT  # noqa: F401 (puts the repository on sys.path)

from jetlib import methods
from jetlib.models.resnet import VARIANTS, ResNet

LEVERS = {"fp32": (False, False, 125), "bf16": (True, False, 125), "channels_last": (False, True, 125),
          "bf16_channels_last": (True, True, 125), "fp32_crop64": (False, False, 64)}


def seconds_per_step(bf16: bool, channels_last: bool, size: int, steps: int, batch: int = 64) -> dict:
    torch.manual_seed(0)
    model = methods.create("simclr", ResNet(VARIANTS["cpu"]), {"proj_hidden": 256})
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    v1, v2 = (torch.rand(batch, 3, size, size).contiguous(memory_format=layout) for _ in range(2))

    def step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(v1, v2)
        loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up: oneDNN picks its kernels on the first call
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_s": round(cpu / steps, 3), "wall_s": round(wall / steps, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    got = {name: seconds_per_step(*lever, steps=args.steps) for name, lever in LEVERS.items()}
    base = got["fp32"]["cpu_s"]
    print(json.dumps({"benchmark": "cpu_step", "threads": args.threads, "steps": args.steps, "batch": 64,
                      "per_step": got, "cpu_speedup_vs_fp32": {k: round(base / v["cpu_s"], 2) for k, v in got.items()},
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
