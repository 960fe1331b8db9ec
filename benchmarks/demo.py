"""``make demo`` measured: each step's wall time, the total, and the headline. Prints one JSON line.

Runs what ``make demo`` runs (``pipelines.demo``: the compiled CPU pipeline under kfp.local), as a
newcomer's first run: a fresh output folder and an empty ``$JETLIB_CACHE`` (so the simulation runs),
unless ``--warm`` keeps the cache of this machine (a second demo). Any other flag goes to the demo
(``--n-jets``, ``--preset``, ``--seeds``, ...). Reported: ``steps`` (seconds per step, lists for the
loops' iterations), ``total_s``, ``cpu_s`` (user + system CPU of every process the demo ran: on a
shared machine compare levers by this, not by wall time), and ``headline`` (fine-tune minus scratch test
AUC at each label fraction, its standard error and their ratio; the goal is at least 5).

    .venv/bin/python benchmarks/demo.py                 # the demo's defaults: the number to quote
    .venv/bin/python benchmarks/demo.py --warm          # a second run: the simulation comes from the cache
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT

from pipelines.demo import parse_args, run_demo


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (kfp.local's step processes, their pools)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warm", action="store_true", help="keep this machine's $JETLIB_CACHE (default: an empty one)")
    ours, rest = p.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="jetlib-bench-demo-") as tmp:
        if not ours.warm:
            os.environ["JETLIB_CACHE"] = str(Path(tmp) / "cache")
        args = parse_args([*rest] if any(a.startswith("--out") for a in rest) else [*rest, "--out", f"{tmp}/demo"])
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        done = run_demo(args)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    times = done["times"]
    print(json.dumps({
        "benchmark": "demo", "yaml": str(args.yaml.relative_to(ROOT) if args.yaml.is_relative_to(ROOT) else args.yaml),
        "n_jets": args.n_jets, "preset": args.preset, "fractions": list(args.fractions), "seeds": args.seeds,
        "modes": args.modes, "cache": "warm" if ours.warm else "empty",
        "steps": {k: v for k, v in times.items() if k != "total"}, "total_s": times["total"],
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "headline": done["headline"],
        "goal": {"total_s": 300, "sigmas": 5}, "cores": os.cpu_count(),
        "load_1min_at_end": round(os.getloadavg()[0], 2),
        "machine": platform.processor() or platform.machine(),
    }))


if __name__ == "__main__":
    sys.exit(main())
