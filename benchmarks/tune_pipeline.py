"""What ``tune_trials`` adds to a kfp.local run of the compiled CPU pipeline: tests/test_pipeline.py's run ``b``
(160 toy jets, tiny preset, two methods, two seeds, three modes) with ``tune_trials=0`` (the baseline, measured
in the same process) and with ``tune_trials=1, tune_epochs=1`` (what the test runs). Prints one JSON line: both
walls, their difference, the tune loop's own span (the end of ingest to the first pretraining task's start,
from kfp.local's task log lines) and the machine's load average, since the two cores may be shared.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_pipeline.py
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the repository on sys.path)

from pipelines.local import CPU_YAML, run_local
from tests.conftest import write_toy_h5  # the tests' own toy jets

RUN_B = {"preset": "tiny", "label_fractions": [0.5], "modes": ["cls-finetune", "reg-scratch", "cls-vgg"],
         "seeds": [2, 3], "augment": "physics", "finetune_augment": "seed", "pretrain_seeds": [1],
         "methods": ["simclr", "vicreg"]}


def one(root: Path, name: str, **params) -> dict:
    steps: list = []
    wall = run_local({"store": str(root / "store"), "source": str(root / "toy.h5"), "run_name": name, **RUN_B,
                      **params}, CPU_YAML, pipeline_root=root / f"kfp-{name}", steps=steps)
    ingested = max(end for task, _, end in steps if task == "ingest")
    first_pretraining = min(start for task, start, _ in steps if task in ("pretrain-size", "pretrain"))
    return {"wall_s": round(wall, 1), "ingest_to_pretraining_s": round(first_pretraining - ingested, 1)}


def main() -> None:
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)  # kfp.local: the tune step runs Optuna here
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_toy_h5(root / "toy.h5", n=160)
        base = one(root, "untuned")
        tuned = one(root, "tuned", tune_trials=1, tune_epochs=1)
    print(json.dumps({"benchmark": "tune_pipeline", "tune_trials_0": base, "tune_trials_1": tuned,
                      "added_wall_s": round(tuned["wall_s"] - base["wall_s"], 1),
                      "load_average": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
