"""``make demo``: the compiled pipeline under ``kfp.local`` on a laptop, and the report's path.

Runs ``pipelines/jet_ssl_cpu.yaml`` (the DAG a GPU-less cluster runs) with a local store and the
``cpu`` preset: simulate jets, ingest, pretrain, then fine-tuning and scratch on the same labelled
subset over several seeds, evaluate each, and the report. The defaults are sized for about
10-15 minutes on 2 cores: 3,000 jets, 10% labels (216 labelled jets) and 3 seeds, where
fine-tuning beats scratch by several times the seed spread (README, "The workflow").

stdout holds one line, the report's path; everything else (what the demo chose, kfp.local's task
log with each step's progress, the headline) goes to stderr.
"""

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from jetlib import checks
from jetlib.checks import argtype
from jetlib.cli import Choices, fraction_list, positive_int
from jetlib.errors import JetlibError
from jetlib.study import DEFAULT_METHODS, DEFAULT_PRETRAIN_SEEDS, MODES
from pipelines.local import CPU_YAML, run_local

DEFAULT_MODES = "cls-finetune,cls-scratch"


_ints = argtype(checks.wholes)
_modes = argtype(checks.names, known=MODES)
_methods = argtype(checks.names, known=Choices("jetlib.methods", "METHODS"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo"), help="demo folder: store/, kfp/ (default ./demo)")
    p.add_argument("--n-jets", type=positive_int, default=3000, help="jets to simulate (default 3000)")
    p.add_argument("--fractions", type=fraction_list, default=(0.1,), help="label fractions (default 0.1)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="training seeds (default 0,1,2)")
    p.add_argument("--modes", type=_modes, default=_modes(DEFAULT_MODES),
                   help=f"trainings, from {','.join(MODES)} (default {DEFAULT_MODES})")
    p.add_argument("--methods", type=_methods, default=list(DEFAULT_METHODS),
                   help=f"pretraining methods, comma-separated (default {','.join(DEFAULT_METHODS)}); each "
                        f"pretrained training runs once per method and pretraining seed")
    p.add_argument("--pretrain-seeds", type=_ints, default=list(DEFAULT_PRETRAIN_SEEDS),
                   help=f"pretraining seeds (default {','.join(map(str, DEFAULT_PRETRAIN_SEEDS))})")
    p.add_argument("--preset", default="cpu", choices=Choices("jetlib.finetune", "PRESETS"), metavar="PRESET",
                   help="%(choices)s: training preset (default cpu)")
    p.add_argument("--run-name", default="demo", help="run folder name under STORE/runs (default demo)")
    p.add_argument("--yaml", type=Path, default=CPU_YAML, help="compiled pipeline (default pipelines/jet_ssl_cpu.yaml)")
    return p.parse_args(argv)


def headline(summary: dict, fractions) -> list[str]:
    """'fine-tune vs scratch' AUC lines from the report's summary, one per label fraction."""
    lines = []
    for f in fractions:
        cells = {m: (summary.get(f"cls_auc_{m}_f{f:g}_mean"), summary.get(f"cls_auc_{m}_f{f:g}_std"))
                 for m in ("finetune", "linear", "scratch", "vgg")}
        # one seed has no spread: the summary then holds a mean and no std
        shown = [f"{m} {mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
                 for m, (mean, std) in cells.items() if mean is not None]
        if shown:
            lines.append(f"test AUC at {f:g} labels (mean ± std over seeds): " + ", ".join(shown))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    store = out / "store"
    arguments = {"store": str(store), "n_jets": args.n_jets, "run_name": args.run_name, "preset": args.preset,
                 "label_fractions": list(args.fractions), "seeds": args.seeds, "modes": args.modes,
                 "methods": args.methods, "pretrain_seeds": args.pretrain_seeds}
    print(f"demo: {args.yaml.name} under kfp.local: {args.n_jets} simulated jets, preset {args.preset}, "
          f"label fractions {list(args.fractions)}, seeds {args.seeds}, modes {','.join(args.modes)}, "
          f"methods {','.join(args.methods)} x pretraining seeds {args.pretrain_seeds}; "
          f"store {store}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # kfp.local prints the steps' logs on stdout
            run_local(arguments, args.yaml, pipeline_root=out / "kfp")
    except JetlibError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return e.exit_code
    report = store / "runs" / args.run_name / "report"
    summary = json.loads((report / "summary.json").read_text())
    for line in headline(summary, args.fractions):
        print(f"demo: {line}", file=sys.stderr)
    print(f"demo: finished in {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr)
    print(report / "report.html")
    print(report.parent / "export")  # the best model of each task as ONNX with its card (the export step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
