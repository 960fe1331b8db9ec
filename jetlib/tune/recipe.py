"""A recipe file: the hyperparameters a tuning found for one method, which ``jetlib pretrain --recipe FILE``
applies (over the method's own recipe and the preset, under the user's flags: :func:`jetlib.pretrain.make_config`).

One JSON object::

    {"format": "jetlib.recipe/1", "method": "byol",
     "values": {"lr": 0.8, "weight_decay": 2e-5, "method_params": {"base_momentum": 0.995}},
     "objective": {"name": "knn_accuracy", "split": "val", "value": 0.71},
     "study": {"name": "...", "trials": 20, "best_trial": 7}, "preset": "cpu", "data": "..."}

Only ``method`` and ``values`` are read back; the rest says where the values came from. A recipe holds
training hyperparameters, never the run's length or data: ``values`` may name only :data:`TUNABLE`
fields and ``method_params``.
"""

from __future__ import annotations

import json

from jetlib.errors import ConfigError

FORMAT = "jetlib.recipe/1"
TUNABLE = ("lr", "weight_decay", "lr_batch", "optimizer", "warmup_epochs")  # PretrainConfig fields a recipe sets


def check_recipe(doc, where: str = "recipe") -> dict:
    """``doc`` when it is a recipe (format, a method name, ``values`` of tunable fields), else one ConfigError."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a jetlib recipe (no \"format\": \"{FORMAT}\")")
    if not isinstance(doc.get("method"), str) or not isinstance(doc.get("values"), dict):
        raise ConfigError(f"{where}: a recipe names its \"method\" and its \"values\" (an object)")
    unknown = sorted(set(doc["values"]) - {*TUNABLE, "method_params"})
    if unknown:
        raise ConfigError(f"{where}: a recipe sets only {', '.join(TUNABLE)} and method_params, "
                          f"not {', '.join(str(k)[:40] for k in unknown[:5])}")
    if not isinstance(doc["values"].get("method_params", {}), dict):
        raise ConfigError(f"{where}: method_params is an object of the method's parameters")
    return doc


def read_recipe(uri: str) -> dict:
    """The recipe in ``uri`` (a file path or a store URI such as ``s3://bucket/tune/recipe.json``)."""
    from jetlib.data.store import NotFound, open_store

    parent, _, name = str(uri).rstrip("/").rpartition("/")
    try:
        data = open_store(parent or ".").get_bytes(name)
    except NotFound:
        raise ConfigError(f"--recipe {str(uri)[:200]}: no such file") from None
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--recipe {str(uri)[:200]}: not JSON ({e})") from None
    return check_recipe(doc, f"--recipe {str(uri)[:200]}")


def recipe_doc(method: str, values: dict, **about) -> dict:
    """A recipe for ``method`` with ``values`` (checked) and what to say about where they came from."""
    return check_recipe({"format": FORMAT, "method": method, "values": values, **about})
