"""One two-process gloo run for every DDP check of the suite (the ``gloo_ranks`` session fixture).

Starting two processes that import torch and form a gloo group costs ~19 s of CPU; the checks
themselves take milliseconds. So the group forms once, runs every registered job in turn (each a
function ``job(rank, world) -> dict`` in a test module, seeding itself), and each rank saves its
results; the tests compare them with one process. A job's failure is recorded, not raised, so one
broken check fails its own tests only.
"""

from __future__ import annotations

import importlib
import os
import traceback
from pathlib import Path

import torch

WORLD = 2
# name -> "module:function": the test modules whose checks run in the shared group
JOBS = {
    "losses_ddp": "tests.test_losses_ddp:gloo_job",
    "simclr": "tests.test_losses:gloo_job",
    "byol_target": "tests.test_methods:gloo_job",
}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as td

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    td.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    try:
        for name, target in JOBS.items():
            module, func = target.split(":")
            try:
                results[name] = getattr(importlib.import_module(module), func)(rank, world)
            except Exception:  # recorded for the job's own tests; the group stays usable for the next job
                results[name] = {"error": traceback.format_exc()}
            td.barrier()
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        td.destroy_process_group()


def run(out: Path, port: int) -> list[dict]:
    """Every job on ``WORLD`` gloo ranks; returns each rank's ``{job name: result}``."""
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(WORLD, port, str(out)), nprocs=WORLD, start_method="spawn")
    return load(out)


def load(out: Path) -> list[dict]:
    """The results a finished :func:`run` saved in ``out``, each rank's ``{job name: result}``."""
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def results(ranks: list[dict], job: str) -> list[dict]:
    """One job's result on each rank; a job that raised fails the calling test with its traceback."""
    got = [r[job] for r in ranks]
    for r in got:
        if isinstance(r, dict) and "error" in r:
            raise AssertionError(f"the gloo job {job} failed on a rank:\n{r['error']}")
    return got
