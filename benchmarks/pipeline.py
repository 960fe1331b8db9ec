"""Orchestration overhead of the compiled pipeline under kfp.local: wall time of the whole DAG
against the sum of its steps' own compute time. Prints one JSON line.

A step's compute time is what its component function takes (from the KFP executor's "Got
executor_input" line to its "Wrote executor output file" line: jetlib's own imports and work);
everything else is orchestration: starting a Python per step, importing kfp, resolving inputs
and writing artifacts. One seed and one mode keep the training loop to one iteration, so the
steps run one after another and the two times compare directly.

    .venv/bin/python benchmarks/pipeline.py --n-jets 1000 --preset cpu    # goal: overhead < 20%
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
from datetime import datetime

from common import ROOT, simulated_file

from pipelines.local import CPU_YAML, run_local

STAMP = re.compile(r"\[KFP Executor (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO\]: "
                   r"(Got executor_input|Wrote executor output)")


class _Tee(io.TextIOBase):
    """Keep what kfp.local prints (it prints each step's log lines) and pass it on to stderr."""

    def __init__(self):
        self.buffer_ = io.StringIO()

    def write(self, text):
        self.buffer_.write(text)
        return sys.stderr.write(text)


def step_seconds(log: str) -> list[float]:
    """Each step's compute time, from the executor's start and end lines (steps run one at a time)."""
    times, start = [], None
    for stamp, what in STAMP.findall(log):
        t = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if what.startswith("Got"):
            start = t
        elif start is not None:
            times.append(t - start)
            start = None
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-jets", type=int, default=1000)
    p.add_argument("--preset", default="cpu", choices=("tiny", "cpu"))
    p.add_argument("--fraction", type=float, default=0.5)
    args = p.parse_args()
    source = simulated_file(args.n_jets, 0)
    with tempfile.TemporaryDirectory(prefix="jetlib-bench-pipeline-") as tmp:
        arguments = {"store": f"{tmp}/store", "source": str(source), "run_name": "bench", "preset": args.preset,
                     "label_fractions": [args.fraction], "seeds": [0], "modes": ["cls-finetune"]}
        tee = _Tee()
        with contextlib.redirect_stdout(tee):
            wall = run_local(arguments, CPU_YAML, pipeline_root=f"{tmp}/kfp")
    steps = step_seconds(tee.buffer_.getvalue())
    compute = sum(steps)
    print(json.dumps({"benchmark": "pipeline", "runner": "kfp.local SubprocessRunner", "n_jets": args.n_jets,
                      "preset": args.preset, "steps": len(steps), "wall_s": round(wall, 2),
                      "steps_compute_s": round(compute, 2), "overhead_s": round(wall - compute, 2),
                      "overhead_pct": round(100 * (wall - compute) / compute, 1), "goal_pct": 20,
                      "yaml": str(CPU_YAML.relative_to(ROOT))}))


if __name__ == "__main__":
    main()
