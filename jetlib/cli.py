"""``jetlib <step>``: one subcommand per pipeline step.

Every step is runnable on a laptop, in ``docker run``, under ``torchrun -m jetlib``
and inside a KFP component, with the same flags. Results a program wants (a URI,
a JSON summary) go to stdout; progress and logs go to stderr. A user error is one
line on stderr and a non-zero exit (2 bad input or flag, 3 store, 4 training, 5 out of
disk or memory); ``--debug`` (before or after the step name) shows the traceback instead.
An unexpected error (a bug) prints its one-line summary and then always its traceback, and
exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import textwrap
import traceback

from jetlib import __version__
from jetlib.cli_args import (  # noqa: F401 (argument types other parsers take from here)
    AUGMENTS,
    ENCODERS,
    FINETUNE_MODES,
    METHODS,
    TASKS,
    VALIDATIONS,
    Choices,
    _HelpFormatter,
    _Parser,
    fraction,
    fraction_list,
    image_size,
    positive_float,
    positive_int,
    unit_interval,
)
from jetlib.config import resolve_preset
from jetlib.errors import JetlibError, ResourceError, one_line, out_of_memory, out_of_memory_line
from jetlib.progress import end_line
from jetlib.tagger.cli import ADDERS as TAGGER_STEPS  # predict, export, serve
from jetlib.tune.cli import add_tune  # tune: the hyperparameter search

DEFAULT_STORE = "jetstore"  # the embedded default: a folder in the working directory




# --- steps ----------------------------------------------------------------------------------

def _simulate(args) -> None:
    from jetlib.data.simulate import SimConfig, simulate

    cfg = SimConfig(n_jets=args.n_jets, seed=args.seed, pt_min=args.pt_min, pt_max=args.pt_max,
                    max_abs_y=args.max_abs_y, jet_r=args.jet_r, chunk_jets=args.chunk_jets)
    summary = simulate(cfg, args.out, workers=args.workers)
    print(json.dumps({"out": str(args.out), **summary}))


def add_key_flags(p) -> None:
    """--images-key, --labels-key, --mass-key, --pt-key: a file's own dataset names (ingest and predict)."""
    keys = p.add_argument_group("dataset keys", "for a file whose datasets are not named X_jets/y/m0/pt or "
                                "jet/Y/m/pT (not given: the layout's own name)")
    keys.add_argument("--images-key", metavar="KEY", help="the images, (N, H, W, C) or (N, C, H, W)")
    keys.add_argument("--labels-key", metavar="KEY", help="the labels: 1 = quark, 0 = gluon")
    keys.add_argument("--mass-key", metavar="KEY", help="the jet mass, GeV")
    keys.add_argument("--pt-key", metavar="KEY", help="the jet pT, GeV")


def keys_of(args) -> dict:
    """The key flags as ``role -> key`` (``None`` where not given), for :func:`jetlib.data.schema.check_keys`."""
    return {"images": args.images_key, "y": args.labels_key, "m0": args.mass_key, "pt": args.pt_key}


def _ingest(args) -> None:
    from jetlib.data.ingest import IngestConfig, ingest
    from jetlib.data.splits import SplitConfig

    split = SplitConfig(test_fraction=args.test_fraction, val_fraction=args.val_fraction,
                        label_fractions=args.fractions, seed=args.split_seed)
    keys = keys_of(args)
    cfg = IngestConfig(split=split, shard_rows=args.shard_rows, row_group_rows=args.row_group_rows,
                       image_size=args.image_size, memory_mb=args.memory_mb, pixel_max=args.pixel_max,
                       max_empty_fraction=args.max_empty_fraction,
                       keys=tuple((role, key) for role, key in keys.items() if key is not None))
    print(ingest(args.source, args.store, name=args.name, cfg=cfg))


def _inspect(args) -> None:
    from jetlib.data.manifest import format_manifest, open_dataset

    ds = open_dataset(args.dataset)
    print(json.dumps(ds.manifest, indent=1) if args.json else format_manifest(ds))
    if args.verify:
        from jetlib.progress import progress

        total = sum(len(s["shards"]) for s in ds.manifest["splits"].values())
        with progress(total=total, desc="verify", unit="shard") as bar:
            n, size = ds.verify(bar)
        print(f"verified  {n} shards, {size / 1e6:,.1f} MB: every sha256, size and row count matches the manifest")


def _pretrain(args) -> None:
    from jetlib.pretrain import make_config, pretrain
    from jetlib.tune.recipe import read_recipe

    recipe = read_recipe(args.recipe) if args.recipe else None
    cfg = make_config(resolve_preset(args.preset), recipe, **_overrides(args, augment=args.augment, lr=args.lr,
                                                                   compile=args.compile or None, method=args.method,
                                                                   encoder=args.encoder))
    final = pretrain(args.data, args.out, cfg, device=args.device)
    if _rank() == 0:  # the process group is gone by now: ask torchrun's environment
        print(json.dumps({"out": args.out, **final}))


def _rank() -> int:
    """torchrun's RANK (0 alone); a malformed one reads as 0 here and is refused by check_environment."""
    from jetlib.errors import ConfigError
    from jetlib.schemas.env import dist_env

    try:
        return dist_env().RANK
    except ConfigError:
        return 0


# The config fields a training flag sets, shown for every preset in the step's epilog.
FLAG_FIELDS = ("epochs", "batch_size", "lr", "max_lr", "seed", "method", "augment", "validation", "patience")


def _flat(value, default, prefix: str) -> list[str]:
    """``FIELD=VALUE`` in --set's syntax for what ``value`` changes against ``default`` (nested configs dotted)."""
    if dataclasses.is_dataclass(value) and dataclasses.is_dataclass(default):
        return [item for f in dataclasses.fields(value)
                for item in _flat(getattr(value, f.name), getattr(default, f.name), f"{prefix}.{f.name}")]
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _flat(v, (default or {}).get(k), f"{prefix}.{k}")]
    if value == default:
        return []
    text = ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)
    return [f"{prefix}={text}"]


def presets_epilog(step: str) -> str:
    """What each preset of ``jetlib.<step>`` sets: its fields over the defaults, then the flags' values."""
    import importlib

    module = importlib.import_module(f"jetlib.{step}")
    lines = ["presets (auto: gpu when CUDA is visible, else cpu; a flag or --set overrides them):"]
    for name in module.PRESETS:
        cfg = module.make_config(name)
        base = type(cfg)()
        sets = [item for f in dataclasses.fields(cfg) if f.name != "preset"
                for item in _flat(getattr(cfg, f.name), getattr(base, f.name), f.name)]
        flags = [f"{k}={getattr(cfg, k)}" for k in FLAG_FIELDS if hasattr(cfg, k)]
        lines.append(f"  {name:5s} {' '.join(flags)}")
        lines += textwrap.wrap(f"sets {' '.join(sets)}" if sets else "sets nothing: the defaults", width=100,
                               initial_indent=" " * 8, subsequent_indent=" " * 13, break_on_hyphens=False)
    return "\n".join(lines)


def _add_training_flags(p, step: str) -> None:
    """Flags every training step shares; ``step`` is the module whose ``PRESETS`` name the presets."""
    p.epilog_fn = lambda: presets_epilog(step)
    p.add_argument("--preset", default="auto", choices=Choices(f"jetlib.{step}", "PRESETS", before=("auto",)),
                   metavar="PRESET", help="%(choices)s: named settings, listed below: tiny (tests), cpu (a laptop), "
                                          "gpu (the study); auto picks gpu when CUDA is visible, else cpu")
    p.add_argument("--epochs", type=positive_int, help="epochs (not given: the preset's)")
    p.add_argument("--batch-size", type=positive_int, help="global batch size, split over the ranks (not given: "
                                                            "the preset's)")
    p.add_argument("--lr", type=positive_float, help="(peak) learning rate (not given: the preset's)")
    p.add_argument("--seed", type=int, help="seed of the initialisation, data order and augmentations (not given: "
                                            "the preset's)")
    p.add_argument("--device", default="auto", help="auto (cuda if visible, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override any config field, e.g. --set model.widths=8,8,16,16,32,32,64 (repeatable; the "
                        "fields are the step's config dataclass, the presets below show their syntax)")


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pretraining of an encoder (1 CPU to N GPUs)",
                       description="Pretrain a jet encoder (the ResNet-15 unless --encoder, SimCLR unless --method) "
                       "on the train split "
                       "(labels ignored). Runs alone or under torchrun --nproc_per_node N -m jetlib pretrain. "
                       "Re-running the same command resumes from the newest checkpoint in --out.")
    p.add_argument("--data", required=True, help="dataset URI (from jetlib ingest)")
    p.add_argument("--out", required=True, help="output folder or s3:// URI for checkpoints, metrics, encoder")
    p.add_argument("--augment", choices=AUGMENTS, metavar="AUGMENT",
                   help="%(choices)s: the two views' augmentations (not given: the preset's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--method", choices=METHODS, metavar="METHOD",
                   help="%(choices)s: self-supervised method (not given: the preset's); its settings: "
                        "--set method_params.NAME=VALUE")
    p.add_argument("--encoder", choices=ENCODERS, metavar="ENCODER",
                   help="%(choices)s: the network pretrained (not given: resnet, the ResNet-15), sized for the "
                        "preset; its arguments: --set model.NAME=VALUE")
    p.add_argument("--recipe", metavar="FILE", help="a tuned recipe (jetlib tune's recipe.json): its method's "
                   "learning rate, weight decay and parameters over the method's own recipe and the preset; "
                   "flags and --set still win")
    _add_training_flags(p, "pretrain")
    p.set_defaults(func=_pretrain)


def _overrides(args, **extra) -> dict:
    """Explicit training flags (those given) plus --set, for config.resolve."""
    from jetlib.config import parse_sets

    values = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, **extra}
    return {**{k: v for k, v in values.items() if v is not None}, **parse_sets(args.set)}


def _finetune(args) -> None:
    from jetlib.finetune import finetune, make_config

    cfg = make_config(resolve_preset(args.preset), **_overrides(args, task=args.task, mode=args.mode, lr=args.lr,
                                                           label_fraction=args.label_fraction,
                                                           augment=args.augment, validation=args.validation))
    run = finetune(args.data, args.out, cfg, init=args.init, device=args.device)
    print(json.dumps({"out": args.out, **run["training"]}))


def _baseline(args) -> None:
    from jetlib.baseline import baseline, make_config

    cfg = make_config(resolve_preset(args.preset), **_overrides(args, max_lr=args.lr,
                                                                label_fraction=args.label_fraction,
                                                                validation=args.validation))
    run = baseline(args.data, args.out, cfg, device=args.device)
    print(json.dumps({"out": args.out, **run["training"]}))


def _evaluate(args) -> None:
    from jetlib.evaluate import evaluate

    result = evaluate(args.data, args.model, args.out, device=args.device, batch_size=args.batch_size)
    print(json.dumps({"task": result["task"], "mode": result["mode"], "label_fraction": result["label_fraction"],
                      "seed": result["seed"], **{k: v for k, v in result["scalars"].items() if v is not None}}))


def _add_subset_flags(p) -> None:
    p.add_argument("--data", required=True, help="dataset URI (from jetlib ingest)")
    p.add_argument("--label-fraction", type=float, default=1.0,
                   help="train on this nested label-fraction subset (one the dataset has, see jetlib inspect)")
    p.add_argument("--out", required=True, help="output folder or s3:// URI")
    p.add_argument("--validation", choices=VALIDATIONS, metavar="VALIDATION",
                   help="%(choices)s: validate on the label fraction's own nested val subset (fraction, the "
                        "honest label budget) or on the whole val split (full) (not given: the preset's)")


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="classification or mass regression on a pretrained or fresh encoder",
                       description="Train a quark/gluon classifier (--task cls) or jet-mass regressor (--task reg) "
                       "on a label-fraction subset: --mode finetune (encoder from --init, trained end to end), "
                       "linear (encoder from --init, frozen) or scratch (random init). Re-running resumes.")
    _add_subset_flags(p)
    p.add_argument("--task", required=True, choices=TASKS, metavar="TASK", help="%(choices)s")
    p.add_argument("--mode", required=True, choices=FINETUNE_MODES, metavar="MODE", help="%(choices)s")
    p.add_argument("--init", help="pretraining output (jetlib pretrain --out); needed by finetune and linear")
    p.add_argument("--augment", choices=AUGMENTS, metavar="AUGMENT",
                   help="%(choices)s: mild augmentation while training (not given: the preset's)")
    _add_training_flags(p, "finetune")
    p.set_defaults(func=_finetune)


def _add_baseline(sub) -> None:
    p = sub.add_parser("baseline", help="the supervised VGG + squeeze-excitation baseline",
                       description="Train the supervised VGG baseline (SE blocks, ensemble of heads, class-weighted "
                       "BCE, OneCycleLR, mixup) on a label-fraction subset. Re-running resumes.")
    _add_subset_flags(p)
    _add_training_flags(p, "baseline")
    p.set_defaults(func=_baseline)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a trained model on the test split",
                       description="Score a model (jetlib finetune or baseline --out) on the dataset's test split "
                       "and write <out>/<task>-<mode>-f<fraction>-s<seed>.json.")
    p.add_argument("--data", required=True, help="dataset URI (the one the model was trained on)")
    p.add_argument("--model", required=True, help="the training step's output folder or s3:// URI")
    p.add_argument("--out", required=True, help="results folder or s3:// URI")
    p.add_argument("--batch-size", type=positive_int, default=512, help="jets per forward pass")
    p.add_argument("--device", default="auto", help="auto (cuda if visible, else cpu), cpu, cuda, cuda:N")
    p.set_defaults(func=_evaluate)


def _report(args) -> None:
    from jetlib.report import build_report

    report = build_report(args.run, args.out)
    out = report.out_uri.rstrip("/")
    print(json.dumps({"html": f"{out}/report.html", "markdown": f"{out}/report.md", "summary": f"{out}/summary.json",
                      "headline": report.headline, "missing": len(report.missing)}))


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="turn a study run folder into report.html, report.md and summary.json",
                       description="Walk a run folder (local or s3://) for pretraining runs, training runs and "
                       "result files, whatever their subfolder names, and write one self-contained page "
                       "(report.html), its Markdown twin (report.md) and flat summary metrics (summary.json).")
    p.add_argument("--run", required=True, help="the run folder or s3:// URI")
    p.add_argument("--out", help="where to write the report (not given: RUN/report)")
    p.set_defaults(func=_report)


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="generate quark/gluon jet images with Pythia 8 + FastJet",
                       description="Generate quark (Z+q) and gluon (Z+g) jets with Pythia 8 and FastJet and "
                       "write 125x125 Tracks/ECAL/HCAL images in the public quark/gluon HDF5 layout.")
    p.add_argument("--n-jets", type=positive_int, default=1000, help="total jets, half quark half gluon")
    p.add_argument("--seed", type=int, default=0, help="seeds generation and row order")
    p.add_argument("--out", required=True, help="output file, .h5")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (not given: all cores)")
    p.add_argument("--pt-min", type=float, default=500.0, help="leading-jet pT window's low edge, GeV")
    p.add_argument("--pt-max", type=float, default=550.0, help="leading-jet pT window's high edge, GeV")
    p.add_argument("--max-abs-y", type=float, default=1.7, help="leading-jet |rapidity| cut")
    p.add_argument("--jet-r", type=float, default=0.4, help="anti-kT radius")
    p.add_argument("--chunk-jets", type=positive_int, default=100,
                   help="jets per class per task: the unit of parallelism and seeding")
    p.set_defaults(func=_simulate)


def _add_ingest(sub) -> None:
    p = sub.add_parser("ingest", help="validate an HDF5 file and commit it to the store as sparse shards",
                       description="Validate SOURCE.h5 and write it to the store as sparse Parquet shards with "
                       "train/val/test splits, nested label-fraction subsets and train statistics. Prints the "
                       "dataset URI. Re-running on the same file is a no-op that prints the same URI.",
                       epilog="layouts (keys are case-sensitive; labels: 1 = quark, 0 = gluon):\n"
                       "  quark/gluon  X_jets (N, 125, 125, 3) or (N, 3, 125, 125), y, m0 (GeV), pt (GeV)\n"
                       "  8-channel    jet (N, 125, 125, 8) or (N, 8, 125, 125), Y, m, pT\n"
                       "  images only  X_jets or jet alone: an unlabelled dataset, for pretraining\n\n"
                       "A file with other names: --images-key NAME (and --labels-key, --mass-key, --pt-key for "
                       "its scalars); every named key is checked as the public ones are. Example: jetlib ingest "
                       "mine.h5 --images-key calo --labels-key is_quark --mass-key mass --pt-key jet_pt")
    p.add_argument("source", help="HDF5 file (X_jets/y/m0/pt or jet/Y/m/pT layout, or name the keys below)")
    p.add_argument("--store", default=os.environ.get("JETLIB_STORE", DEFAULT_STORE),
                   help="local folder or s3://bucket/prefix; $JETLIB_STORE, when set, is the default")
    p.add_argument("--name", help="dataset name (not given: the file's stem)")
    add_key_flags(p)
    p.add_argument("--test-fraction", type=fraction, default=0.2, help="held-out test share")
    p.add_argument("--val-fraction", type=fraction, default=0.1, help="validation share, carved from train")
    # --label-fractions, as the pipeline's label_fractions and finetune's --label-fraction; --fractions still read
    p.add_argument("--label-fractions", "--fractions", dest="fractions", type=fraction_list,
                   default="0.01,0.1,0.25,0.5,1", help="nested label-fraction subsets of train to store")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the splits")
    p.add_argument("--shard-rows", type=positive_int, default=1024, help="jets per shard")
    p.add_argument("--row-group-rows", type=positive_int, default=256,
                   help="jets per Parquet row group, the loader's unit")
    p.add_argument("--image-size", type=image_size, default="125",
                   help="required image side in pixels, or 'any'")
    p.add_argument("--memory-mb", type=positive_int, default=1024,
                   help="RAM for the shuffle before spilling to local disk ($JETLIB_TMPDIR)")
    p.add_argument("--pixel-max", type=positive_float, default=14_000.0,
                   help="refuse a pixel above this many GeV as non-physical (the LHC's energy)")
    p.add_argument("--max-empty-fraction", type=unit_interval, default=0.01,
                   help="refuse the file if more jets than this have an all-zero image; fewer are kept, warned "
                        "about and recorded in the manifest")
    p.set_defaults(func=_ingest)


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="show a dataset's manifest", description="Show a committed dataset.")
    p.add_argument("dataset", help="dataset URI, as printed by jetlib ingest")
    p.add_argument("--json", action="store_true", help="print the raw manifest")
    p.add_argument("--verify", action="store_true",
                   help="also read every shard and check its sha256, size and row count (exit 2 if any fails)")
    p.set_defaults(func=_inspect)


def _version_line() -> str:
    from jetlib.provenance import git_commit

    return f"jetlib {__version__} (git {git_commit() or 'unknown'})"


EPILOG = """exit codes:
  0    done
  1    internal error (a bug): a summary line, then the traceback
  2    bad input or flag: one line naming the file, key or value
  3    the object store: unreachable, refused or read-only
  4    training cannot go on: a non-finite loss, a dead or hung peer
  5    out of disk or memory
  130  interrupted (Ctrl-C)

environment:
  JETLIB_STORE              the default --store of jetlib ingest (else ./jetstore)
  JETLIB_S3_ENDPOINT        the S3 endpoint of s3:// stores, e.g. http://seaweedfs.kubeflow:8333 (the
                            scheme decides TLS)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (optional)
                            S3 credentials; never printed
  AWS_REGION                the S3 region (default us-east-1)
  SSL_CERT_FILE             CA bundle for an https:// endpoint (default: certifi's)
  JETLIB_S3_RETRIES         attempts on transient S3 errors (default 5)
  JETLIB_S3_CONNECT_TIMEOUT seconds to open a connection (default 10)
  JETLIB_S3_READ_TIMEOUT    seconds without a byte before an attempt fails (default 60)
  JETLIB_S3_DEADLINE        seconds after the first attempt when no new one starts (default 300)
  JETLIB_CACHE              local cache of S3 shards and compiled kernels (default ~/.cache/jetlib)
  JETLIB_TMPDIR             where ingest spills its shuffle (default: the system temp folder)
  JETLIB_PROGRESS           0 turns progress bars off
  JETLIB_DIST_TIMEOUT_S     seconds a rank waits for a hung or dead peer (default 1800)
  JETLIB_TUNE_BACKEND       where the pipeline's tune step runs trials: auto (Katib in a pod), katib, optuna
  JETLIB_GIT_COMMIT         the commit recorded as provenance where there is no git checkout (images)
  RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE
                            set by torchrun: python -m torch.distributed.run -m jetlib pretrain ...

Every step is also python -m jetlib <step>. Results go to stdout, progress and logs to stderr."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser = _Parser(prog="jetlib", parents=[common], epilog=EPILOG,
                     description="Self-supervised learning for jet images: one subcommand per pipeline step.")
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", metavar="<step>", parser_class=_Parser, required=True)
    for add in (_add_simulate, _add_ingest, _add_inspect, _add_pretrain, _add_finetune, _add_baseline, _add_evaluate,
                _add_report, *TAGGER_STEPS, add_tune):
        add(sub)
    for p in sub.choices.values():  # --debug works after the step name too
        # SUPPRESS: absent after the step, it must not reset a `jetlib --debug <step>` to False
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks and debug logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = _rank() > 0  # under torchrun, only rank 0 talks
    level = logging.DEBUG if args.debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("urllib3", "botocore", "matplotlib", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    prog = f"jetlib {args.command}"
    try:
        from jetlib.schemas.env import check_environment

        check_environment()  # every variable jetlib reads, before a step writes anything
        args.func(args)
    except JetlibError as e:
        if args.debug:
            raise
        end_line()
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        end_line()
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `jetlib inspect ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug, not bad input: the summary line, then the traceback (nobody can rerun
        if args.debug:      # a KFP pod or a ten-GPU-hour run with --debug: the line alone loses the trace)
            raise
        end_line()
        if out_of_memory(e):  # the machine, not a bug: one line, exit 5 (ResourceError's code)
            print(f"{prog}: error: {out_of_memory_line(e)}", file=sys.stderr)
            return ResourceError.exit_code
        print(f"{prog}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return 1
    return 0
