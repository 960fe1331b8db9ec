"""``make demo``: the compiled pipeline under ``kfp.local`` on a laptop, and the report's path.

Runs ``pipelines/jet_ssl_cpu.yaml`` (the DAG a GPU-less cluster runs) with a local store and the
``cpu`` preset: simulate jets, ingest, pretrain, then fine-tuning and scratch on the same labelled
subset over several seeds, evaluate each, and the report. The defaults are sized for about
10-15 minutes on 2 cores: 3,000 jets, 10% labels (216 labelled jets) and 3 seeds, where
fine-tuning beats scratch by several times the seed spread (docs/workflow.md).

stdout holds one line, the report's path; everything else (what the demo chose, kfp.local's task
log with each step's progress, the headline, and a table of each step's wall time) goes to stderr.
``benchmarks/demo.py`` prints the same table and the headline as one JSON line.
"""

import argparse
import contextlib
import io
import json
import math
import re
import sys
from pathlib import Path

from jetlib import checks
from jetlib.checks import argtype
from jetlib.cli import Choices, fraction_list, positive_int
from jetlib.errors import JetlibError
from jetlib.study import DEFAULT_METHODS, DEFAULT_PRETRAIN_SEEDS, MODES
from pipelines.local import CPU_YAML, run_local

DEFAULT_MODES = "cls-finetune,cls-scratch"
# the steps that only plan and name (no data touched): one row of the table
PLAN_TASKS = ("run-folder", "plan", "plan-pretraining", "match-encoders", "pretrain-gpus", "pretrain-size")
REPEATED = ("pretrain", "train", "evaluate")  # a list each, one per iteration of their loop
# the simulation's own log line, printed by the ingest step (jetlib.data.simulate.simulate); a cached
# file logs "simulation taken from the cache" instead and takes no Pythia time
SIMULATED = re.compile(r"simulated \d+ jets from \d+ events in ([\d.]+) s")


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


def difference(results: list[dict], fraction: float, a: str = "finetune", b: str = "scratch",
               task: str = "cls", metric: str = "roc_auc") -> dict | None:
    """Mean ``a`` minus mean ``b`` of ``metric`` at ``fraction`` over the run's results, and its
    standard error ``sqrt(s_a^2/n_a + s_b^2/n_b)`` (sample std over seeds, as the report's
    comparisons, ``jetlib.report.stats``); None without two results on each side."""
    pools = {m: [r["scalars"][metric] for r in results
                 if r.get("task") == task and r.get("mode") == m and metric in r.get("scalars", {})
                 and math.isclose(float(r.get("label_fraction", -1)), fraction)]
             for m in (a, b)}
    if min(len(v) for v in pools.values()) < 2:
        return None
    mean = {m: sum(v) / len(v) for m, v in pools.items()}
    var = {m: sum((x - mean[m]) ** 2 for x in v) / (len(v) - 1) for m, v in pools.items()}
    se = math.sqrt(sum(var[m] / len(pools[m]) for m in pools))
    diff = mean[a] - mean[b]
    return {"fraction": fraction, "metric": f"{task} {metric}", a: round(mean[a], 4), b: round(mean[b], 4),
            "n": {m: len(v) for m, v in pools.items()}, "difference": round(diff, 4), "se": round(se, 4),
            "sigmas": round(diff / se, 1) if se > 0 else None}


def _union(intervals: list[tuple[float, float]]) -> float:
    """Seconds during which at least one of the intervals was running."""
    busy, reach = 0.0, float("-inf")
    for a, b in sorted(intervals):
        busy += max(0.0, b - max(a, reach))
        reach = max(reach, b)
    return busy


def step_times(steps: list[tuple[str, float, float]], log: str, total: float) -> dict:
    """Wall seconds per row of the table, in the order the steps started: ``simulate`` and ``ingest``
    (split by the simulation's own log line), ``pretrain`` (a list: one per pretraining), ``train`` and
    ``evaluate`` (while at least one ran: the loop runs two at once), ``report``, any other step,
    ``plan`` (the planning steps together), ``orchestration`` (no step running: kfp.local's own time)
    and ``total``; ``each`` holds every train's and evaluate's own seconds."""
    simulated = sum(float(t) for t in SIMULATED.findall(log))
    by_row: dict[str, list] = {}
    for name, a, b in sorted(steps, key=lambda s: s[1]):
        by_row.setdefault("plan" if name in PLAN_TASKS else name, []).append((a, b))
    rows: dict = {}
    for name, spans in by_row.items():
        if name == "plan":
            continue
        wall = _union(spans)
        if name == "ingest":
            rows["simulate"] = min(simulated, wall)
            rows["ingest"] = max(wall - simulated, 0.0)
        elif name == "pretrain":
            rows[name] = [b - a for a, b in spans]
        else:
            rows[name] = wall
    rows["plan"] = _union(by_row.get("plan", []))
    rows["orchestration"] = max(total - _union([(a, b) for _, a, b in steps]), 0.0)
    rows["total"] = total
    out = {k: [round(x, 1) for x in v] if isinstance(v, list) else round(v, 1) for k, v in rows.items()}
    out["each"] = {n: [round(b - a, 1) for a, b in by_row[n]] for n in REPEATED if n in by_row and n != "pretrain"}
    return out


def table(times: dict) -> list[str]:
    """The table's lines: one per step (each pretraining on its own), wall seconds and share of the total."""
    lines, total = [f"{'step':<18}{'wall s':>8}{'share':>7}"], times["total"] or 1.0
    each = times.get("each", {})

    def line(label: str, t: float) -> str:
        return f"{label:<18}{t:>8.1f}{100 * t / total:>6.0f}%"

    for name, v in times.items():
        if name in ("total", "each"):
            continue
        if name == "pretrain":
            lines += [line(f"pretrain #{i}", t) for i, t in enumerate(v, 1)]
        else:
            lines.append(line(f"{name} (x{len(each[name])})" if name in each else name, v))
    lines.append(f"{'total':<18}{times['total']:>8.1f}  ({times['total'] / 60:.1f} min)")
    if each:
        lines.append("(train and evaluate: wall time while at least one ran; the loop runs two at once)")
    return lines


class _Tee(io.TextIOBase):
    """What kfp.local prints (the steps' logs), kept for the table and passed on to stderr."""

    def __init__(self):
        self.kept = io.StringIO()

    def write(self, text):
        self.kept.write(text)
        return sys.stderr.write(text)


def run_demo(args: argparse.Namespace) -> dict:
    """Run the demo; returns ``report`` (its folder), ``times`` (:func:`step_times`) and ``headline``
    (:func:`difference` at each label fraction that has one).

    Raises:
        JetlibError: a step failed (its own error is in the log on stderr).
    """
    out = args.out.resolve()
    store = out / "store"
    arguments = {"store": str(store), "n_jets": args.n_jets, "run_name": args.run_name, "preset": args.preset,
                 "label_fractions": list(args.fractions), "seeds": args.seeds, "modes": args.modes,
                 "methods": args.methods, "pretrain_seeds": args.pretrain_seeds}
    print(f"demo: {args.yaml.name} under kfp.local: {args.n_jets} simulated jets, preset {args.preset}, "
          f"label fractions {list(args.fractions)}, seeds {args.seeds}, modes {','.join(args.modes)}, "
          f"methods {','.join(args.methods)} x pretraining seeds {args.pretrain_seeds}; "
          f"store {store}", file=sys.stderr)
    steps: list = []
    tee = _Tee()
    with contextlib.redirect_stdout(tee):  # kfp.local prints the steps' logs on stdout
        total = run_local(arguments, args.yaml, pipeline_root=out / "kfp", steps=steps)
    run = store / "runs" / args.run_name
    results = [json.loads(p.read_text()) for p in sorted((run / "results").glob("*.json"))]
    return {"report": run / "report", "times": step_times(steps, tee.kept.getvalue(), total),
            "headline": [h for f in args.fractions if (h := difference(results, f)) is not None]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        done = run_demo(args)
    except JetlibError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return e.exit_code
    report = done["report"]
    summary = json.loads((report / "summary.json").read_text())
    for line in headline(summary, args.fractions):
        print(f"demo: {line}", file=sys.stderr)
    for h in done["headline"]:
        print(f"demo: fine-tune - scratch at {h['fraction']:g} labels: {h['difference']:+.3f} AUC, standard error "
              f"{h['se']:.3f} ({h['sigmas']} sigma)", file=sys.stderr)
    for line in table(done["times"]):
        print(f"demo: {line}", file=sys.stderr)
    print(report / "report.html")
    print(report.parent / "export")  # the best model of each task as ONNX with its card (the export step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
