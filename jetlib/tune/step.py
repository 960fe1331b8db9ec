"""The pipeline's tune step: one method's search, run before its pretrainings, its result left in the run folder.

``RUN/tune/<method>/`` (:func:`tune_dir`) holds what the report and the pretrainings read:

- ``recipe.json``: the best trial's recipe, exactly the file ``jetlib tune`` writes
  (:mod:`jetlib.tune.recipe`); every pretraining of the method runs ``jetlib pretrain --recipe`` on it;
- ``trials.json``: every trial, the rows of :func:`jetlib.tune.study.history` (a JSON list);

and what a re-run needs to continue: ``study.journal`` (Optuna's study) or ``experiment.json`` (the
Katib Experiment's name and namespace).

Where the trials run is decided by where the step runs (or by ``JETLIB_TUNE_BACKEND``). In a pod
(``KUBERNETES_SERVICE_HOST`` set, as the kubelet sets it in every container) they run as a Katib
Experiment (:func:`jetlib.tune.katib.submit`), each trial a TrainJob on the cluster, and the step only
waits for it and reads its optimal trial. Elsewhere (``kfp.local``, a laptop) Optuna runs them in the
step, one after another, in a scratch folder (the study is a journal file, which needs a local disk)
whose journal is uploaded after every trial, so a killed step loses at most the trial it was running:
the re-run downloads the study and continues it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from jetlib.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

RECIPE, TRIALS, JOURNAL, EXPERIMENT = "recipe.json", "trials.json", "study.journal", "experiment.json"


def tune_dir(run: str, method: str) -> str:
    """``RUN/tune/<method>``: where the tune step of ``method`` leaves its recipe and trials."""
    return f"{str(run).rstrip('/')}/tune/{method}"


def recipe_uri(run: str, method: str) -> str:
    """The tuned recipe of ``method`` in the run folder ``run`` (what its pretrainings pass to ``--recipe``)."""
    return f"{tune_dir(run, method)}/{RECIPE}"


def on_cluster() -> bool:
    """True where the trials go to Katib: ``JETLIB_TUNE_BACKEND=katib``, or (``auto``, the default) in a
    Kubernetes pod, where the kubelet sets ``KUBERNETES_SERVICE_HOST`` in every container. ``optuna`` keeps
    them in the step even in a pod: ``pipelines.local`` sets it, so a kfp.local run from a notebook pod
    never submits an Experiment."""
    from jetlib.schemas.env import check_environment

    backend = check_environment().JETLIB_TUNE_BACKEND
    return backend == "katib" or (backend == "auto" and bool(os.environ.get("KUBERNETES_SERVICE_HOST")))


def tune_step(data: str, run: str, method: str, trials: int, *, preset: str, epochs: int = 0, seed: int = 0,
              gpus_per_node: int = 0, image: str = "", parallel: int = 1, namespace: str | None = None,
              configuration=None, poll_s: int = 30) -> dict:
    """Search ``method``'s recipe with ``trials`` trials of ``preset`` (``epochs`` > 0: that many epochs a trial,
    else the preset's); writes :func:`tune_dir`'s files and returns the recipe.

    ``preset`` ``auto`` and the device follow ``gpus_per_node`` as the pretrainings' do (0: the cpu preset on
    the CPU; more: the gpu preset, on a GPU where the trials run). ``image``, ``parallel``, ``namespace`` and
    ``configuration`` are the Katib path's (the trials' image, trials at once, where and how to reach the API
    server); ``seed`` seeds either search.
    """
    from jetlib.data.store import open_store

    if epochs < 0:
        raise ConfigError(f"tune_epochs must be 0 (the preset's) or more, got {epochs}")
    if preset == "auto":
        preset = "gpu" if gpus_per_node > 0 else "cpu"
    sets = {"epochs": epochs} if epochs > 0 else {}
    store = open_store(tune_dir(run, method))
    if on_cluster():
        recipe, rows = _on_katib(store, data, tune_dir(run, method), method, trials, preset, sets, seed, image,
                                 min(parallel, trials), namespace, configuration, poll_s)
    else:
        device = "auto" if gpus_per_node > 0 else "cpu"
        recipe, rows = _with_optuna(store, data, method, trials, preset, sets, seed, device)
    # the trials first and the recipe last: a recipe in the folder means the search is over
    store.put_bytes(TRIALS, json.dumps(rows, indent=1).encode())
    store.put_bytes(RECIPE, json.dumps(recipe, indent=1).encode())
    log.info("%s: best %s %.4f with %s", method, recipe["objective"]["name"], recipe["objective"]["value"],
             recipe["values"])
    return recipe


def _with_optuna(store, data: str, method: str, trials: int, preset: str, sets: dict, seed: int, device: str):
    """The trials here, one :func:`jetlib.tune.study.tune` call per trial, the study uploaded after each."""
    from jetlib.data.store import NotFound
    from jetlib.tune.study import history, tune

    with tempfile.TemporaryDirectory(prefix="jetlib-tune-") as tmp:
        local = Path(tmp)
        try:
            (local / JOURNAL).write_bytes(store.get_bytes(JOURNAL))
            log.info("continuing the study in %s", store.key_uri(JOURNAL))
        except NotFound:
            pass
        for n in range(1, trials + 1):  # a trial the store already records returns at once
            try:
                tune(data, str(local), method, n, preset=preset, sets=sets, seed=seed, device=device)
            except TrainingError:
                if n == trials:  # no trial finished at all: the search failed
                    raise
            store.put_bytes(JOURNAL, (local / JOURNAL).read_bytes())
        return json.loads((local / RECIPE).read_text()), history(str(local))


def _on_katib(store, data, out, method, trials, preset, sets, seed, image, parallel, namespace, configuration,
              poll_s):
    """Submit the Experiment once (its name kept in ``experiment.json``), then wait for it and read it."""
    from jetlib.data.store import NotFound
    from jetlib.tune import katib

    if not image:
        raise ConfigError("the tune step on a cluster needs image: the jetlib image every Katib trial runs")
    try:
        name = json.loads(store.get_bytes(EXPERIMENT))["name"]
        log.info("waiting for Katib Experiment %s, submitted by an earlier try of this step", name)
    except NotFound:
        name = katib.submit(data, out, method, trials, image=image, preset=preset, sets=sets, parallel=parallel,
                            seed=seed, namespace=namespace, configuration=configuration)
        store.put_bytes(EXPERIMENT, json.dumps({"name": name, "namespace": namespace}).encode())
        log.info("submitted Katib Experiment %s: %d trials of %s", name, trials, method)
    return katib.result(name, method, data=data, out=out, preset=preset, sets=sets, namespace=namespace,
                        configuration=configuration, poll_s=poll_s)
