"""Which model of a study run to hand over: the best of each task on the validation split, never the test split.

Every finished training in the run folder (:func:`jetlib.report.collect.collect`) is scored on
the **whole** validation split of its dataset with its task's own validation scores
(:meth:`jetlib.tasks.task.Task.val_scores`), and the one with the best ``monitor`` (validation
accuracy for the classifier, validation MAE in GeV for the mass) wins; a tie goes to the
smaller label fraction, then the folder name, so the choice is reproducible. The whole split,
not each model's own validation subset: models trained at different label fractions were
validated on nested subsets of different sizes, and only the same jets make their numbers
comparable. The test split stays what it is for: the number reported, not the number chosen by.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
from dataclasses import asdict, dataclass

from jetlib import tasks
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import open_dataset
from jetlib.errors import ConfigError
from jetlib.evaluate import load_model
from jetlib.report.collect import collect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    """The model chosen for one task."""

    task: str
    uri: str  # the training folder
    mode: str
    label_fraction: float
    seed: int
    monitor: str  # the validation key it was chosen by
    value: float  # its value on the whole val split
    candidates: int  # trainings of this task compared
    result: dict | None  # its jetlib evaluate result, when the run has one (the card's test metrics)


def val_score(uri: str, batch_size: int = 512) -> tuple[str, float, dict]:
    """(monitor key, value, blob) of the model at ``uri`` on the whole val split of its dataset."""
    net, blob, run = load_model(uri, "cpu")
    task = tasks.get(blob["task"])
    ds = open_dataset(run["dataset"]["uri"])
    val = JetLoader(ds, "val", batch_size=batch_size, shuffle=False, normalize=blob["normalize"])
    scores = task.val_scores(task.predict(net, val, contextlib.nullcontext, blob.get("target")))
    return task.monitor, float(scores[task.monitor]), blob


def best_models(run: str) -> dict[str, Choice]:
    """The best training of each task in the run folder ``run``, by validation score.

    Raises:
        ConfigError: the folder holds no finished training.
    """
    study = collect(run)
    if not study.trainings:
        raise ConfigError(f"--run {run}: no finished training to export")
    results = {(r.get("model") or {}).get("sha256"): r for r in study.results}
    scored: dict[str, list] = {}
    for step in study.trainings:
        monitor, value, blob = val_score(step.uri)
        scored.setdefault(blob["task"], []).append((step, monitor, value, blob))
        log.info("%s: %s %.4g on the whole val split", step.uri, monitor, value)
    chosen = {}
    for name, entries in sorted(scored.items()):
        sign = -1.0 if tasks.get(name).higher_is_better else 1.0
        step, monitor, value, blob = min(entries, key=lambda e: (sign * e[2], e[3]["label_fraction"], e[0].uri))
        chosen[name] = Choice(name, step.uri, blob["mode"], blob["label_fraction"], blob["seed"], monitor, value,
                              len(entries), results.get(step.run["model"]["sha256"]))
    return chosen


def export_best(run: str, out: str | None = None) -> list[dict]:
    """Export the best model of each task (:func:`best_models`) into ``out/<task>/`` (default ``RUN/export``).

    Returns one record per task: ``task``, ``uri`` (the export folder), ``training`` (the chosen
    training's folder), its mode, label fraction, seed, the validation key and value it was chosen
    by, how many it was chosen from, and its card.
    """
    from jetlib.tagger.export import export

    out = out or posixpath.join(run.rstrip("/"), "export")
    exported = []
    for name, choice in best_models(run).items():
        folder = posixpath.join(out, name)
        card = export(choice.uri, folder, test_metrics=choice.result)
        record = {k: v for k, v in asdict(choice).items() if k not in ("result", "uri")}
        exported.append({**record, "uri": folder, "training": choice.uri, "card": card})
    return exported
