"""Helpers the benchmarks share: the cached simulated file and a wall-clock rate meter."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jetlib.data.simulate import SimConfig, simulate  # noqa: E402


def simulated_file(n_jets: int, seed: int) -> Path:
    path = ROOT / ".cache" / "bench" / f"sim-{n_jets}-{seed}.h5"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        simulate(SimConfig(n_jets=n_jets, seed=seed), path)
    return path


def timed(step_sizes, seconds: float, warmup: int = 2) -> float:
    """Jets/s over whole passes of ``step_sizes()`` (yields the jets in each step) for ``seconds``,
    after ``warmup`` steps."""
    n, t0, done = 0, None, 0
    while True:
        for size in step_sizes():
            done += 1
            if done == warmup:
                t0 = time.perf_counter()
            elif t0 is not None:
                n += size
                if time.perf_counter() - t0 >= seconds:
                    return n / (time.perf_counter() - t0)
