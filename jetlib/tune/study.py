"""``jetlib tune``: search one method's hyperparameters with Optuna, each trial a ``jetlib pretrain`` run.

The objective is the k-NN accuracy the pretraining monitor computes (:func:`jetlib.monitor.knn_accuracy`:
a bank of labelled *train* jets votes for the *validation* jets), read from the trial's ``metrics.json``
after every epoch: the test split is never read, so the search cannot leak into the study's verdict.
Each epoch's value is reported to Optuna, whose median pruner stops a trial whose accuracy is below the
median of the earlier trials at the same epoch (after :data:`PRUNE_AFTER_TRIALS` complete trials).

The search space (:func:`space`): the learning rate and weight decay, each log-uniform from a tenth to
ten times the method's recipe, plus the method's own, declared by its class (``search_space``, and
``tune_fixed`` for what every trial holds fixed): SimCLR's temperature (fixed during each trial, 0.03 to
0.5, around the fixed values the SimCLR paper's Table 5 compares), Barlow Twins' lambda (a tenth to ten
times the 1/D-scaled default), VICReg's invariance and variance weights (5 to 50 with the covariance
weight at 1, as the paper's coefficient ablation), BYOL's base EMA momentum (0.9 to 0.999).

Everything lives in ``--out`` (a local folder): ``study.journal`` (Optuna's JournalStorage: every
trial's parameters, epochs and outcome, appended as it happens), ``trials/<key>/`` (the trial's
pretraining run; ``key`` is a hash of its settings) beside ``trials/<key>.recipe.json`` (the settings
it ran), and at the end ``recipe.json`` (the best trial's, for ``jetlib pretrain --recipe``). A killed
``tune`` re-run with the same command continues: the trial that was running is queued again with its
settings, its pretraining resumes from its newest checkpoint, and only the trials still missing run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from jetlib.errors import ConfigError, StoreError, TrainingError
from jetlib.tune.recipe import read_recipe, recipe_doc

log = logging.getLogger(__name__)

OBJECTIVE = "knn_accuracy"  # the monitor's k-NN accuracy on the validation split (higher is better)
PRUNE_AFTER_TRIALS = 2  # trials completed before the median pruner may stop one
POLL_S = 0.5  # how often a running trial's metrics.json is read


def space(method: str, cfg) -> dict:
    """The Optuna distributions searched for ``method`` around its resolved config ``cfg``: the learning rate
    and weight decay, then the method's own (its class's :meth:`~jetlib.methods.base.Method.search_space`)."""
    from optuna.distributions import FloatDistribution

    from jetlib import methods

    around = lambda v: FloatDistribution(v / 10, v * 10, log=True)  # noqa: E731
    dims = {"lr": around(cfg.lr), "weight_decay": around(cfg.weight_decay or 1e-5)}
    own = methods.get(method).search_space(methods.params(method, cfg.method_params))
    return {**dims, **{name: FloatDistribution(lo, hi, log=log) for name, (lo, hi, log) in own.items()}}


def fixed_params(method: str) -> dict:
    """Method parameters every trial holds fixed (its class's ``tune_fixed``)."""
    from jetlib import methods

    return dict(methods.get(method).tune_fixed)


def settings(method: str, params: dict) -> dict:
    """A trial's Optuna ``params`` as a recipe's ``values``."""
    values = {k: v for k, v in params.items() if k in ("lr", "weight_decay")}
    mp = {**fixed_params(method), **{k: v for k, v in params.items() if k not in values}}
    return {**values, **({"method_params": mp} if mp else {})}


def _key(method: str, values: dict) -> str:
    return hashlib.sha256(json.dumps([method, values], sort_keys=True).encode()).hexdigest()[:12]


def tune(data: str, out: str, method: str, trials: int, preset: str = "cpu", sets: dict | None = None,
         seed: int = 0, device: str = "auto") -> dict:
    """Run (or continue) the search; returns the best trial's settings and where its recipe was written.

    ``sets`` are config values every trial runs with (``--set epochs=3``); ``seed`` seeds the sampler.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from jetlib import methods
    from jetlib.data.manifest import open_dataset
    from jetlib.pretrain import make_config

    if "://" in str(out):
        raise ConfigError(f"tune --out {str(out)[:200]}: a local folder (the study is a journal file beside the "
                          f"trials); copy it to the store afterwards")
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    methods.get(method)  # an unknown method or dataset: one line before anything is written
    if not open_dataset(data).labelled:
        raise ConfigError(f"tune --data {str(data)[:200]}: no labels, and the objective is the k-NN accuracy on "
                          f"the validation split")
    base = make_config(preset, method=method, **dict(sets or {}))
    dims = space(method, base)
    root = Path(out)
    try:
        (root / "trials").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"tune --out {str(out)[:200]}: cannot write there ({e.strerror})") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(root / "study.journal")))
    study = optuna.create_study(study_name=f"jetlib-{method}", storage=storage, direction="maximize",
                                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER_TRIALS,
                                                                   n_warmup_steps=0))
    _requeue_interrupted(study, TrialState)
    while _counted(study, TrialState) < trials:
        trial = study.ask(dims)
        values = settings(method, trial.params)
        state, value = _run_trial(trial, data, root, method, values, preset, sets or {}, device)
        study.tell(trial, value, state=state)
        log.info("trial %d: %s (%s %s)", trial.number, state.name.lower(), OBJECTIVE,
                 "-" if value is None else f"{value:.4f}")
    return _finish(study, root, method, preset, data, sets or {}, TrialState)


def _counted(study, TrialState) -> int:
    """Trials that count towards ``--trials``: finished ones, not those a killed tune left behind."""
    interrupted = set(study.user_attrs.get("interrupted", []))
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.number not in interrupted))


def _requeue_interrupted(study, TrialState) -> None:
    """A trial still RUNNING when this tune starts was killed with its tune: fail it (listed in the study's
    ``interrupted``, so it does not count) and queue its settings again: the same run folder, so its
    pretraining resumes."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.set_user_attr("interrupted", [*study.user_attrs.get("interrupted", []), t.number])
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
        log.info("trial %d was interrupted: queued again, its pretraining resumes", t.number)


def _run_trial(trial, data, root: Path, method, values, preset, sets, device):
    """``jetlib pretrain`` with the trial's recipe in a child process, pruned on its per-epoch objective."""
    from optuna.trial import TrialState

    key = _key(method, values)
    recipe = root / "trials" / f"{key}.recipe.json"
    recipe.write_text(json.dumps(recipe_doc(method, values, trial=trial.number), indent=1))
    run = root / "trials" / key
    trial.set_user_attr("run", str(run))
    cmd = [sys.executable, "-m", "jetlib", "pretrain", "--data", str(data), "--out", str(run), "--preset", preset,
           "--method", method, "--recipe", str(recipe), "--device", device]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    log_path = root / "trials" / f"{key}.log"
    with open(log_path, "ab") as logf:
        # the tune's own process group: a pod or a terminal that kills the tune kills its trial too
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        try:
            reported = set()
            while True:
                done = proc.poll() is not None
                for epoch, value in _epochs(run / "metrics.json"):
                    if epoch not in reported:
                        reported.add(epoch)
                        trial.report(value, epoch)
                        if trial.should_prune():
                            _stop(proc)
                            return TrialState.PRUNED, None
                if done:
                    break
                time.sleep(POLL_S)
        except BaseException:  # a killed or interrupted tune takes its trial with it; a re-run resumes it
            _stop(proc)
            raise
    if proc.returncode == 0:
        final = json.loads((run / "run.json").read_text())["final"]
        if not isinstance(final.get(OBJECTIVE), float) or not math.isfinite(final[OBJECTIVE]):
            raise ConfigError(f"the trials record no {OBJECTIVE}: tune needs a dataset with labels (the k-NN "
                              f"monitor scores the validation split) and monitor_bank > 0")
        return TrialState.COMPLETE, final[OBJECTIVE]
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
    if proc.returncode == TrainingError.exit_code:  # this trial's settings diverged: a result, not an error
        log.warning("trial %d failed: %s", trial.number, tail[0][:300])
        return TrialState.FAIL, None
    raise ConfigError(f"trial {trial.number} could not run (exit {proc.returncode}): {tail[0][:300]} "
                      f"(log: {log_path})")


def _epochs(path: Path) -> list[tuple[int, float]]:
    """(epoch, objective) of every epoch a trial's metrics.json holds so far (written atomically)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [(e["epoch"], e[OBJECTIVE]) for e in doc.get("epochs", []) if isinstance(e.get(OBJECTIVE), float)]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _finish(study, root: Path, method, preset, data, sets, TrialState) -> dict:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        raise TrainingError(f"no trial of {method} finished ({len(study.trials)} pruned or failed): widen the "
                            f"search or check the trials' logs in {root / 'trials'}")
    best = max(complete, key=lambda t: t.value)
    values = settings(method, best.params)
    doc = recipe_doc(method, values, preset=preset, data=str(data), fixed=dict(sets),
                     objective={"name": OBJECTIVE, "split": "val", "value": best.value},
                     study={"name": study.study_name, "trials": len(study.trials), "best_trial": best.number,
                            "run": best.user_attrs.get("run")})
    tmp = root / "recipe.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, root / "recipe.json")
    read_recipe(str(root / "recipe.json"))  # what pretrain --recipe will read
    return {"out": str(root), "recipe": str(root / "recipe.json"), "method": method, OBJECTIVE: best.value,
            "best_trial": best.number, "values": values,
            "trials": {s.name.lower(): sum(1 for t in study.trials if t.state == s)
                       for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}}


def history(out: str) -> list[dict]:
    """Every trial of the study in ``out``: number, state, objective, per-epoch values, settings (for a plot)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(out) / "study.journal"
    if not path.exists():
        raise ConfigError(f"{str(out)[:200]}: no study.journal (run jetlib tune there first)")
    storage = JournalStorage(JournalFileBackend(str(path)))
    rows = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        rows += [{"study": summary.study_name, "number": t.number, "state": t.state.name.lower(), "value": t.value,
                  "epochs": dict(t.intermediate_values), "params": t.params} for t in study.trials]
    return rows
