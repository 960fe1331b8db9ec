"""``jetlib evaluate``: score a trained model on the held-out test split, one JSON result per model.

Every model (fine-tuned, linear, scratch, VGG) is scored on the same test split of
the same dataset, and every result file has the same keys, so that runs compare
in a table and in the Kubeflow UI:

``scalars``         the numbers a table shows, identical keys for every run: classification
                    ones are null for regression runs and vice versa
``classification``  accuracy, F1, ROC AUC, ROC curve, confusion matrix, background rejection
``regression``      MSE, RMSE, MAE (GeV), R^2, relative resolution, bias in bins of true mass
``resources``       parameters, peak memory, training time and jets/s, evaluation jets/s
``config``          the model's full training configuration
``origin``          the pretrained encoder it started from (``init``, ``encoder_sha256``,
                    ``pretrain_seed``; null for scratch and VGG)
``labels``          labelled jets used for training and validation, and which validation
``provenance``      when, by which jetlib, git commit and package versions, on what

The file is ``<out>/<task>-<mode>-f<fraction>-s<seed>[-p<encoder sha256[:8]>].json``: fine-tunes
of two pretraining runs land side by side. Readers should read the content, not parse
the name. Every part of the name comes from the model file, which lives in a shared store,
so each is checked by its grammar first (:func:`result_name`): a known task and mode, a
fraction in (0, 1], a whole-number seed, a hex sha256; a crafted mode cannot write outside
``--out``. Writing a different result (another model or dataset) over an existing file
is refused; re-evaluating the same model into the same place rewrites it.
"""

from __future__ import annotations

import json
import logging
import time

from jetlib import baseline, finetune
from jetlib.checkpoint import read_run
from jetlib.data.keys import is_sha256
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import Dataset, open_dataset
from jetlib.data.store import open_store
from jetlib.device import autocast_for, resolve_device
from jetlib.errors import ConfigError, DataError
from jetlib.metrics import classification, regression
from jetlib.provenance import provenance
from jetlib.trainer import predict

log = logging.getLogger(__name__)
RESULT_FORMAT = "jetlib.result/1"
CLS_KEYS = ("accuracy", "f1", "roc_auc", "rejection_at_eps_s_0.5", "rejection_at_eps_s_0.3")
REG_KEYS = ("mse", "rmse", "mae", "r2", "relative_resolution")
SCALAR_KEYS = CLS_KEYS + REG_KEYS


MODES = {"cls": ("finetune", "linear", "scratch", "vgg"), "reg": ("finetune", "linear", "scratch")}
MODEL_KINDS = {"resnet": finetune.build_model, "vgg": baseline.build_model}


def result_name(task: str, mode: str, fraction: float, seed: int, encoder_sha256: str | None = None) -> str:
    """The result file's name, every part checked by its grammar (they are read back from a model file).

    Raises:
        DataError: a part that is not what jetlib writes.
    """
    if task not in MODES or mode not in MODES[task]:
        raise DataError(f"the model records task {str(task)[:40]!r} and mode {str(mode)[:40]!r}: not a task and mode "
                        f"jetlib trains (refused: they would name the result file)")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise DataError(f"the model records label fraction {str(fraction)[:40]!r}: expected a number in (0, 1]")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"the model records seed {str(seed)[:40]!r}: expected a whole number")
    if encoder_sha256 is not None and not is_sha256(encoder_sha256):
        raise DataError(f"the model records encoder sha256 {str(encoder_sha256)[:70]!r}: expected 64 hex digits")
    origin = f"-p{encoder_sha256[:8]}" if encoder_sha256 else ""
    return f"{task}-{mode}-f{fraction:g}-s{seed}{origin}.json"


def origin_of(blob: dict) -> dict | None:
    """The pretrained encoder a model started from, or None (scratch, VGG)."""
    origin = blob.get("origin") or {}
    if not origin.get("encoder_sha256") or blob.get("mode") == "scratch":
        return None
    return {"init": origin.get("init"), "encoder_sha256": origin["encoder_sha256"],
            "pretrain_seed": origin.get("pretrain_seed")}


def write_result(out: str, result: dict) -> str:
    """Write ``result`` into the store ``out`` under its name; refuses to replace a different result."""
    origin = result.get("origin") or {}
    name = result_name(result["task"], result["mode"], result["label_fraction"], result["seed"],
                       origin.get("encoder_sha256"))
    store = open_store(out)
    if store.exists(name):
        try:
            old = json.loads(store.get_bytes(name))
            same = (old["model"]["sha256"], old["dataset"]["id"]) == (result["model"]["sha256"],
                                                                       result["dataset"]["id"])
        except (ValueError, KeyError, TypeError):
            same = False
        if not same:
            raise ConfigError(f"{store.key_uri(name)} already holds the result of another model or dataset: "
                              f"choose another --out (results are never overwritten by different ones)")
    store.put_bytes(name, json.dumps(result, indent=1, allow_nan=False).encode())
    return name


def load_model(model_uri: str, device):
    """(network with its best weights, model blob, run record) from a training step's output."""
    blob, run = read_run(model_uri, "model", formats=("jetlib.model/1",), flag="--model")
    kind = blob.get("kind") if isinstance(blob, dict) else None
    if kind not in MODEL_KINDS:
        raise DataError(f"--model {model_uri}: model.pt records kind {str(kind)[:40]!r}, expected resnet or vgg")
    result_name(blob.get("task"), blob.get("mode"), blob.get("label_fraction"), blob.get("seed"))  # fail early
    model = MODEL_KINDS[kind](blob)
    model.load_state_dict(blob["state_dict"])
    return model.to(device), blob, run


def evaluate(data: str | Dataset, model_uri: str, out: str | None, device: str = "auto",
             batch_size: int = 512) -> dict:
    """Score the model at ``model_uri`` on the test split; writes and returns the result."""
    dev = resolve_device(device)
    ds = data if isinstance(data, Dataset) else open_dataset(data)
    model, blob, run = load_model(model_uri, dev)
    if blob["dataset"] != ds.manifest["id"]:
        raise DataError(f"the model was trained on dataset {blob['dataset']}, not {ds.manifest['id']} "
                        f"({ds.uri}): scores on other data are not comparable")
    autocast = autocast_for(dev, run["config"].get("amp", "auto"))
    test = JetLoader(ds, "test", batch_size=batch_size, device=dev, shuffle=False, normalize=blob["normalize"])
    t0 = time.perf_counter()
    if blob["kind"] == "vgg":
        p = predict(model, test, autocast, baseline.score)
    else:
        target = (blob["target"]["mean"], blob["target"]["std"])
        p = predict(model, test, autocast, finetune.scorer(blob["task"], target))
    seconds = time.perf_counter() - t0
    cls = classification(p["y"], p["out"]) if blob["task"] == "cls" else None
    reg = regression(p["m0"], p["out"]) if blob["task"] == "reg" else None
    scalars = {k: (cls or {}).get(k, (reg or {}).get(k)) for k in SCALAR_KEYS}
    result = {
        "format": RESULT_FORMAT,
        "task": blob["task"], "mode": blob["mode"], "label_fraction": blob["label_fraction"], "seed": blob["seed"],
        "model": {"uri": model_uri, "sha256": run["model"]["sha256"], "kind": blob["kind"]},
        "dataset": {"uri": ds.uri, "id": ds.manifest["id"], "split": "test", "jets": len(p["out"])},
        "scalars": scalars,
        "classification": cls,
        "regression": reg,
        "resources": {**run["resources"], "train_seconds": run["training"]["train_seconds"],
                      "train_jets_per_s": run["training"]["train_jets_per_s"],
                      "eval_jets_per_s": len(p["out"]) / max(seconds, 1e-9)},
        "training": run["training"],
        "config": run["config"],
        "origin": origin_of(blob),
        "labels": run.get("labels"),
        "provenance": provenance(dev),
    }
    if out is not None:
        name = write_result(out, result)
        log.info("%s: %s", name, ", ".join(f"{k} {v:.4g}" for k, v in scalars.items() if v is not None))
    return result
