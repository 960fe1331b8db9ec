"""Is a record one the report can read? Every field it uses, checked by type before it is used.

Result files, training and pretraining ``run.json`` and their ``metrics.json`` live in a
shared store and are found by content, so any JSON object with the right ``format``
reaches the report. One whose fields have the wrong type or are missing (a seed that is a
list, a ROC curve that is a string, a training run without its task) is listed as
unreadable, with the field named, instead of stopping the whole report with a traceback.
"""

from __future__ import annotations

import math

from jetlib import tasks

CLS_NUMBERS = ("accuracy", "f1", "roc_auc", "rejection_at_eps_s_0.5", "rejection_at_eps_s_0.3")
REG_NUMBERS = ("mse", "rmse", "mae", "r2", "bias", "relative_resolution", "relative_resolution_68",
               "relative_bias_median")
BIN_NUMBERS = ("lo", "hi", "n", "true_mean", "bias", "relative_bias")


def _number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _whole(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, int)


def _kind(v) -> str:
    return "null" if v is None else type(v).__name__


class _Problem(Exception):
    pass


def _need(ok: bool, field: str, value, expected: str) -> None:
    if not ok:
        raise _Problem(f"{field} is {_kind(value)}, expected {expected}")


def _object(doc: dict, key: str, optional: bool = True) -> dict:
    value = doc.get(key)
    if value is None and optional:
        return {}
    _need(isinstance(value, dict), key, value, "an object" + (" or null" if optional else ""))
    return value


def _numbers_or_null(doc: dict, keys, where: str) -> None:
    for k in keys:
        if k in doc:
            _need(doc[k] is None or _number(doc[k]), f"{where}.{k}", doc[k], "a finite number or null")


def _strings_or_null(doc: dict, keys, where: str) -> None:
    for k in keys:
        if k in doc:
            _need(doc[k] is None or isinstance(doc[k], str), f"{where}.{k}", doc[k], "a string or null")


def _classification(cls: dict) -> None:
    _numbers_or_null(cls, CLS_NUMBERS, "classification")
    roc = cls.get("roc")
    if roc is not None:
        _need(isinstance(roc, dict), "classification.roc", roc, "an object")
        for k in ("fpr", "tpr"):
            v = roc.get(k)
            _need(isinstance(v, list) and all(_number(x) for x in v), f"classification.roc.{k}", v,
                  "a list of numbers")
        _need(len(roc["fpr"]) == len(roc["tpr"]), "classification.roc", "lists", "fpr and tpr of one length")
    cm = cls.get("confusion_matrix")
    if cm is not None:
        _need(isinstance(cm, list) and len(cm) == 2 and all(isinstance(r, list) and len(r) == 2 and
                                                            all(_number(x) for x in r) for r in cm),
              "classification.confusion_matrix", cm, "a 2x2 list of numbers")


def _regression(reg: dict) -> None:
    _numbers_or_null(reg, REG_NUMBERS, "regression")
    bins = reg.get("bias_in_bins")
    if bins is not None:
        _need(isinstance(bins, list) and all(isinstance(b, dict) for b in bins), "regression.bias_in_bins", bins,
              "a list of objects")
        for i, b in enumerate(bins):
            _numbers_or_null(b, BIN_NUMBERS, f"regression.bias_in_bins[{i}]")


def _numbers(section: dict, where: str) -> None:
    _numbers_or_null(section, [k for k, v in section.items() if not isinstance(v, (dict, list))], where)


# the checks of each kind of result section a task writes (jetlib.tasks: Task.section); another kind: its numbers
SECTION_CHECKS = {"classification": _classification, "regression": _regression}


def _grid_cell(doc: dict) -> None:
    """task, mode, label fraction and seed: what places a result or a training run in the study's grid."""
    task, mode = doc.get("task"), doc.get("mode")
    _need(isinstance(task, str) and task in tasks.TASKS, "task", task, " or ".join(tasks.TASKS))
    modes = tasks.get(task).modes
    _need(mode in modes, "mode", mode, " or ".join(modes))
    f = doc.get("label_fraction")
    _need(_number(f) and 0 < f <= 1, "label_fraction", f, "a number in (0, 1]")
    _need(_whole(doc.get("seed")), "seed", doc.get("seed"), "a whole number")


def result_problem(doc: dict) -> str | None:
    """Why the result file ``doc`` cannot be read, naming the field, or None when it can."""
    try:
        _grid_cell(doc)
        scalars = _object(doc, "scalars", optional=False)
        _numbers_or_null(scalars, list(scalars), "scalars")
        for section in tasks.sections():
            part = _object(doc, section)
            SECTION_CHECKS.get(section, lambda d, s=section: _numbers(d, s))(part)
        _strings_or_null(_object(doc, "model"), ("uri", "sha256", "arch"), "model")
        _strings_or_null(_object(doc, "dataset"), ("uri", "id", "split"), "dataset")
        origin = _object(doc, "origin")
        _strings_or_null(origin, ("init", "encoder_sha256", "method"), "origin")
        if origin.get("pretrain_seed") is not None:
            _need(_whole(origin["pretrain_seed"]), "origin.pretrain_seed", origin["pretrain_seed"], "a whole number")
        labels = _object(doc, "labels")
        for k in ("train_jets", "val_jets"):
            if labels.get(k) is not None:
                _need(_whole(labels[k]), f"labels.{k}", labels[k], "a whole number")
        _strings_or_null(labels, ("validation",), "labels")
        resources = _object(doc, "resources")
        for k, v in resources.items():
            _need(v is None or isinstance(v, str) or _number(v), f"resources.{k}", v, "a number or a string")
        for key in ("training", "config"):
            _object(doc, key)
        _provenance(doc)
    except _Problem as e:
        return str(e)
    return None


# per-epoch numbers the report plots or sums (pretraining and supervised training write different ones)
EPOCH_NUMBERS = ("loss", "temperature", "lr", "knn_accuracy", "seconds", "jets_per_s", "train_loss", "val_loss")


def _provenance(doc: dict) -> None:
    provenance = _object(doc, "provenance")
    if provenance.get("packages") is not None:
        _need(isinstance(provenance["packages"], dict), "provenance.packages", provenance["packages"], "an object")


def step_problem(run: dict, pretraining: bool) -> str | None:
    """Why a training (or, with ``pretraining``, a pretraining) ``run.json`` cannot be read, naming the field,
    or None when it can."""
    try:
        if pretraining:
            config = _object(run, "config")
            _need(config.get("seed") is None or _whole(config["seed"]), "config.seed", config.get("seed"),
                  "a whole number or null")
            _strings_or_null(config, ("method",), "config")
            _strings_or_null(_object(run, "method"), ("name",), "method")
            final = _object(run, "final")
            _numbers_or_null(final, ("epoch", "loss"), "final")
            _object(final, "embedding")
            _strings_or_null(_object(run, "encoder"), ("sha256",), "encoder")
            _need(run.get("world_size") is None or _whole(run["world_size"]), "world_size", run.get("world_size"),
                  "a whole number or null")
        else:
            _grid_cell(run)
            _strings_or_null(_object(run, "model"), ("sha256",), "model")
            for key in ("config", "training", "resources", "labels"):
                _object(run, key)
        _strings_or_null(_object(run, "dataset"), ("uri", "id"), "dataset")
        _provenance(run)
    except _Problem as e:
        return str(e)
    return None


def metrics_problem(metrics: dict) -> str | None:
    """Why a step's ``metrics.json`` cannot be read (its per-epoch history), naming the field, or None."""
    try:
        epochs = metrics.get("epochs")
        if epochs is None:
            return None
        _need(isinstance(epochs, list), "epochs", epochs, "a list")
        for i, e in enumerate(epochs):
            _need(isinstance(e, dict), f"epochs[{i}]", e, "an object")
            _need(_whole(e.get("epoch")), f"epochs[{i}].epoch", e.get("epoch"), "a whole number")
            _numbers_or_null(e, EPOCH_NUMBERS, f"epochs[{i}]")
            _object(e, "embedding")
    except _Problem as e:
        return str(e)
    return None
