"""A pipeline step's start-up: CPU seconds a fresh step process spends importing. Prints one JSON line.

kfp.local runs every task as a fresh Python process (``kfp.dsl.executor_main``, then the component's
function, which imports its ``jetlib`` modules), so each of the demo's ~18 steps pays its imports
once. For each step this measures a fresh interpreter importing what that step imports before it
works, in the working tree (``new``) and in the tree at ``--baseline`` (``old``, extracted with
``git archive``), alternating old and new so that a load on the machine hits both alike. CPU is
user + system of the child process; each figure is the median of ``--repeats`` runs.

``optim_first_use_s`` is what every training and pretraining process pays on top, in the working
tree: building the first ``torch.optim`` optimizer imports ``torch._dynamo``
(``Optimizer.add_param_group`` is wrapped by ``torch._disable_dynamo``, which imports it on the first
call; ``torch/_compile.py``, ``torch/optim/optimizer.py``), whatever the optimizer's options.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# what each component's function imports before it works (components/*.py and the step functions
# of jetlib.steps), after kfp's executor
STEPS = {
    "ingest": ["components.ingest", "jetlib.steps", "jetlib.data.ingest", "jetlib.data.manifest",
               "jetlib.data.store"],
    "pretrain": ["components.pretrain", "jetlib.methods", "jetlib.placement", "jetlib.steps", "jetlib.study",
                 "jetlib.pretrain"],
    "train": ["components.train", "jetlib.kfp_outputs", "jetlib.steps", "jetlib.config", "jetlib.baseline",
              "jetlib.finetune"],
    "evaluate": ["components.evaluate", "jetlib.evaluate", "jetlib.kfp_outputs", "jetlib.steps"],
    "report": ["components.report", "jetlib.kfp_outputs", "jetlib.report", "jetlib.report.collect", "jetlib.steps"],
    "export": ["components.export", "jetlib.data.store", "jetlib.kfp_outputs", "jetlib.steps",
               "jetlib.tagger.export", "jetlib.tagger.select"],
    "plan": ["components.plan", "jetlib.steps", "jetlib.study", "jetlib.placement"],
}
HEAVY = ("sklearn", "scipy", "pandas", "matplotlib", "onnx", "onnxruntime", "h5py", "torch", "torch._dynamo")
PROBE = ("import json, resource, sys\n"
         "import kfp.dsl.executor_main\n"
         "{imports}\n"
         "{extra}\n"
         "r = resource.getrusage(resource.RUSAGE_SELF)\n"
         "print(json.dumps({{'cpu': r.ru_utime + r.ru_stime, 'heavy': [m for m in {heavy!r} if m in sys.modules]}}))\n")


def probe(tree: Path, modules: list[str], extra: str = "") -> dict:
    code = PROBE.format(imports="\n".join(f"import {m}" for m in modules), extra=extra, heavy=HEAVY)
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"startup: importing {modules} in {tree} failed: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="7e776ee", help="the commit whose tree is 'old' (before the lazy imports)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp)
        archive = subprocess.run(["git", "archive", args.baseline, "jetlib", "components"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        steps = {}
        for name, modules in STEPS.items():
            runs = {"old": [], "new": []}
            for _ in range(args.repeats):
                for which, tree in (("old", old), ("new", ROOT)):
                    runs[which].append(probe(tree, modules))
            o, n = (statistics.median(r["cpu"] for r in runs[w]) for w in ("old", "new"))
            steps[name] = {"old_s": round(o, 3), "new_s": round(n, 3), "saved_s": round(o - n, 3),
                           "old_heavy": runs["old"][0]["heavy"], "new_heavy": runs["new"][0]["heavy"]}
        optim = [probe(ROOT, STEPS["train"], "import torch; torch.optim.Adam([torch.zeros(1, requires_grad=True)])")
                 ["cpu"] for _ in range(args.repeats)]
        first_use = statistics.median(optim) - steps["train"]["new_s"]
    demo = {"ingest": 1, "pretrain": 1, "train": 6, "evaluate": 6, "report": 1, "export": 1, "plan": 3}
    print(json.dumps({
        "benchmark": "startup", "baseline": args.baseline, "repeats": args.repeats,
        "threads": os.environ.get("OMP_NUM_THREADS", "1"),
        "load_1min": round(os.getloadavg()[0], 2), "children_cpu_s": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime, 1),
        "steps": steps,
        "demo_saved_cpu_s": round(sum(steps[k]["saved_s"] * n for k, n in demo.items()), 2),
        "demo_step_counts": demo,
        "optim_first_use_s": round(first_use, 3)}))


if __name__ == "__main__":
    main()
