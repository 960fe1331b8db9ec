"""``jetlib tune``, added to ``jetlib``'s parser by :func:`add_tune`; Optuna is imported only when it runs."""

from __future__ import annotations

import json


def _tune(args) -> None:
    from jetlib.config import parse_sets, resolve_preset
    from jetlib.errors import ConfigError

    preset, sets = resolve_preset(args.preset), parse_sets(args.set)
    if args.backend == "katib":
        from jetlib.tune.katib import submit

        if not args.image:
            raise ConfigError("--backend katib needs --image: the jetlib image every trial's pod runs")
        name = submit(args.data, args.out, args.method, args.trials, image=args.image, preset=preset, sets=sets,
                      parallel=args.parallel, seed=args.seed, namespace=args.namespace)
        print(json.dumps({"experiment": name, "out": args.out, "method": args.method, "trials": args.trials}))
        return
    from jetlib.tune.study import tune

    result = tune(args.data, args.out, args.method, args.trials, preset=preset, sets=sets, seed=args.seed,
                  device=args.device)
    print(json.dumps(result))


def add_tune(sub) -> None:
    from jetlib.cli import METHODS, Choices, positive_int

    p = sub.add_parser("tune", help="search a pretraining method's hyperparameters (Optuna) and write its recipe",
                       description="Run --trials pretrainings of --method (each a jetlib pretrain in a child "
                       "process), searching the learning rate, the weight decay and the method's own parameters "
                       "(SimCLR's fixed temperature, Barlow Twins' lambda, VICReg's loss weights, BYOL's base EMA "
                       "momentum) for the best k-NN accuracy on the validation split; trials below the median are "
                       "stopped early. The study (study.journal), the trials and the best recipe (recipe.json, "
                       "for jetlib pretrain --recipe) are written to --out; re-running the same command continues "
                       "a killed search.")
    p.add_argument("--data", required=True, help="dataset URI (from jetlib ingest), with labels for the k-NN monitor")
    p.add_argument("--method", required=True, choices=METHODS, metavar="METHOD", help="%(choices)s")
    p.add_argument("--trials", required=True, type=positive_int, help="trials to finish (a re-run counts the "
                                                                      "finished ones)")
    p.add_argument("--out", required=True, help="optuna: a local folder for the study, its trials and recipe.json; "
                                                "katib: an s3:// URI for the trials' runs")
    p.add_argument("--preset", default="auto", choices=Choices("jetlib.pretrain", "PRESETS", before=("auto",)),
                   metavar="PRESET", help="%(choices)s: the pretraining preset every trial runs (auto: gpu when "
                                          "CUDA is visible, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (the trials' own seed: --set seed=N)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N: every trial's device")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="a pretraining config value every trial runs with, e.g. --set epochs=3 (repeatable)")
    p.add_argument("--backend", choices=("optuna", "katib"), default="optuna",
                   help="optuna: the trials here, one after another; katib: a Katib Experiment on the cluster "
                        "(kubeconfig or in-cluster), its trials TrainJobs writing to --out (s3://)")
    p.add_argument("--image", help="katib: the jetlib image the trials run")
    p.add_argument("--parallel", type=positive_int, default=1, help="katib: trials running at once")
    p.add_argument("--namespace", help="katib: the namespace (not given: the kubeconfig context's)")
    p.set_defaults(func=_tune)
