"""``jetlib evaluate``: score a trained model on the held-out test split, one JSON result per model.

Every model (fine-tuned, linear, scratch, VGG) is scored on the same test split of
the same dataset, and every result file has the same keys, so that runs compare
in a table and in the Kubeflow UI:

``scalars``         the numbers a table shows, identical keys for every run (every task's
                    ``keys``, :func:`jetlib.tasks.scalar_keys`): another task's are null
``classification``  (task ``cls``) accuracy, F1, ROC AUC, ROC curve, confusion matrix, background rejection
``regression``      (task ``reg``) MSE, RMSE, MAE (GeV), R^2, relative resolution, bias in bins of true mass;
                    every task's ``section`` is present, null but the model's own task's
``resources``       parameters, peak memory, training time and jets/s, evaluation jets/s
``config``          the model's full training configuration
``origin``          the pretrained encoder it started from (``init``, ``encoder_sha256``,
                    ``pretrain_seed``, ``method``; null for scratch and VGG)
``labels``          labelled jets used for training and validation, and which validation
``provenance``      when, by which jetlib, git commit and package versions, on what

The model is rebuilt by :func:`jetlib.models.from_blob` and scored by its task's prediction
(:meth:`jetlib.tasks.task.Task.predict`): nothing here depends on which network or task it is.

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
import re
import time

from jetlib import methods, models, records, tasks
from jetlib.data.keys import is_sha256
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import Dataset, open_dataset
from jetlib.data.store import open_store
from jetlib.device import inference_autocast, setup_device
from jetlib.errors import ConfigError, DataError
from jetlib.provenance import provenance
from jetlib.schemas.records import Result, check_record

log = logging.getLogger(__name__)
SCALAR_KEYS = tasks.scalar_keys()  # those of the built-in tasks; a result holds every registered task's


METHOD_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # how a pretraining method may appear in a file name


def result_name(task: str, mode: str, fraction: float, seed: int, encoder_sha256: str | None = None,
                method: str | None = None) -> str:
    """The result file's name, every part checked by its grammar (they are read back from a model file).

    A model fine-tuned from a pretrained encoder carries the encoder's method and the first 8 hex
    digits of its sha256 (``cls-finetune-f0.1-s0-vicreg-p1a2b3c4d.json``): fine-tunes of two methods
    or two pretraining runs sit side by side. A model without a recorded method was pretrained
    before methods were a choice: SimCLR.

    Raises:
        DataError: a part that is not what jetlib writes.
    """
    if not isinstance(task, str) or task not in tasks.TASKS or mode not in tasks.get(task).modes:
        raise DataError(f"the model records task {str(task)[:40]!r} and mode {str(mode)[:40]!r}: not a task and mode "
                        f"jetlib trains (refused: they would name the result file)")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise DataError(f"the model records label fraction {str(fraction)[:40]!r}: expected a number in (0, 1]")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"the model records seed {str(seed)[:40]!r}: expected a whole number")
    if encoder_sha256 is not None and not is_sha256(encoder_sha256):
        raise DataError(f"the model records encoder sha256 {str(encoder_sha256)[:70]!r}: expected 64 hex digits")
    if method is not None and not (isinstance(method, str) and METHOD_NAME.fullmatch(method)):
        raise DataError(f"the model records pretraining method {str(method)[:40]!r}: expected a lowercase name")
    origin = f"-{method or methods.DEFAULT_METHOD}-p{encoder_sha256[:8]}" if encoder_sha256 else ""
    return f"{task}-{mode}-f{fraction:g}-s{seed}{origin}.json"


def origin_of(blob: dict) -> dict | None:
    """The pretrained encoder a model started from, or None (scratch, VGG)."""
    origin = blob.get("origin") or {}
    if not origin.get("encoder_sha256") or blob.get("mode") == "scratch":
        return None
    # method: absent on models trained before methods were a choice (readers take it as SimCLR)
    return {"init": origin.get("init"), "encoder_sha256": origin["encoder_sha256"],
            "pretrain_seed": origin.get("pretrain_seed"),
            **({"method": origin["method"]} if origin.get("method") else {})}


def write_result(out: str, result: dict) -> str:
    """Write ``result`` into the store ``out`` under its name; refuses to replace a different result."""
    origin = result.get("origin") or {}
    name = result_name(result["task"], result["mode"], result["label_fraction"], result["seed"],
                       origin.get("encoder_sha256"), origin.get("method"))
    store = open_store(out)
    if store.exists(name):
        try:  # a result that fails its schema is not this model's either: refused, never overwritten
            old = check_record(Result, json.loads(store.get_bytes(name)), store.key_uri(name))
            same = (old["model"]["sha256"], old["dataset"]["id"]) == (result["model"]["sha256"],
                                                                       result["dataset"]["id"])
        except (ValueError, DataError):
            same = False
        if not same:
            raise ConfigError(f"{store.key_uri(name)} already holds the result of another model or dataset: "
                              f"choose another --out (results are never overwritten by different ones)")
    store.put_bytes(name, json.dumps(result, indent=1, allow_nan=False).encode())
    return name


def load_model(model_uri: str, device):
    """(network with its best weights, model blob, run record) from a training step's output."""
    blob, run = records.read_run(model_uri, "model", records.MODEL, "--model")  # both passed their schemas
    what = f"--model {model_uri}: model.pt"
    models.arch_of(blob, what)  # fail early: the name parts below come from the same file
    origin = origin_of(blob) or {}
    result_name(blob.get("task"), blob.get("mode"), blob.get("label_fraction"), blob.get("seed"),
                origin.get("encoder_sha256"), origin.get("method"))
    return models.from_blob(blob, what).to(device), blob, run


def evaluate(data: str | Dataset, model_uri: str, out: str | None, device: str = "auto",
             batch_size: int = 512) -> dict:
    """Score the model at ``model_uri`` on the test split; writes and returns the result."""
    dev = setup_device(device)  # cuda:N made current, as in training
    ds = data if isinstance(data, Dataset) else open_dataset(data)
    model, blob, run = load_model(model_uri, dev)
    if blob["dataset"] != ds.manifest["id"]:
        raise DataError(f"the model was trained on dataset {blob['dataset']}, not {ds.manifest['id']} "
                        f"({ds.uri}): scores on other data are not comparable")
    task = tasks.get(blob["task"])
    autocast = inference_autocast(dev, run["config"].get("amp", "auto"))
    test = JetLoader(ds, "test", batch_size=batch_size, device=dev, shuffle=False, normalize=blob["normalize"])
    t0 = time.perf_counter()
    p = task.predict(model, test, autocast, blob.get("target"))
    seconds = time.perf_counter() - t0
    metrics = task.test_metrics(p)
    scalars = {k: metrics.get(k) if k in task.keys else None for k in tasks.scalar_keys()}
    result = {
        "format": records.RESULT,
        "task": blob["task"], "mode": blob["mode"], "label_fraction": blob["label_fraction"], "seed": blob["seed"],
        "model": {"uri": model_uri, "sha256": run["model"]["sha256"], "arch": blob["arch"]},
        "dataset": {"uri": ds.uri, "id": ds.manifest["id"], "split": "test", "jets": len(p["out"])},
        "scalars": scalars,
        **{section: (metrics if section == task.section else None) for section in tasks.sections()},
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
