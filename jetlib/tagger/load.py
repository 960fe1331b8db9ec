"""A trained model as a tagger: raw pixel energies in, the task's per-jet number out.

A training step's folder (``model.pt`` + ``run.json``, local or ``s3://``) is rebuilt by
:func:`jetlib.evaluate.load_model` (:func:`jetlib.models.from_blob` inside, the one rebuild path),
and wrapped with what the loader did around it in training: the train-split normalisation
(each channel divided by its train std, read from the training dataset's manifest) before the
network, and the task's prediction (:meth:`jetlib.tasks.task.Task.prediction`: the quark
probability, or the mass in GeV) after it. :class:`Tagger` is that whole function, so
``predict``, the ONNX export and the server compute the same thing.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from jetlib import tasks
from jetlib.data.manifest import Dataset, open_dataset
from jetlib.errors import ConfigError, DataError, StoreError
from jetlib.evaluate import load_model

# the output column of each built-in task; another task's is "<task>_pred"
COLUMNS = {"cls": "p_quark", "reg": "mass_pred_gev"}


def output_column(task: str) -> str:
    return COLUMNS.get(task, f"{task}_pred")


class Tagger(nn.Module):
    """(B, C, H, W) raw float32 energies (GeV, the file's channel order) -> (B,) prediction in the task's units."""

    def __init__(self, net: nn.Module, task: tasks.Task, scale: np.ndarray, norm: dict | None):
        super().__init__()
        self.net, self.task, self.norm = net, task, norm
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, np.float32)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the loader's normalisation: multiply by 1/std per channel (zeros stay zero)
        return self.task.prediction(self.net(x * self.scale), self.norm)


@dataclass
class Loaded:
    """A rebuilt model with everything around it."""

    tagger: Tagger  # eval mode, on the CPU
    blob: dict  # model.pt without its weights
    run: dict  # run.json
    uri: str  # the training folder
    dataset: Dataset  # the training dataset (its manifest gives normalisation and image shape)
    scale: np.ndarray  # (C,) float32: what the raw energies are multiplied by
    column: str  # the prediction's column name

    @property
    def task(self) -> tasks.Task:
        return self.tagger.task

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.dataset.image_shape)

    @property
    def sha256(self) -> str:
        return self.run["model"]["sha256"]

    def runner(self, device, autocast):
        """``run(x) -> (B,) float32 array`` for raw (B, C, H, W) float32 CPU tensors, on ``device``."""
        tagger = self.tagger.to(device)

        def run(x: torch.Tensor) -> np.ndarray:
            with torch.no_grad(), autocast():
                return tagger(x.to(device)).float().cpu().numpy()
        return run


def model_folder(model: str) -> str:
    """A training folder from ``--model``: the folder itself, or its ``model.pt``."""
    text = str(model).rstrip("/")
    return posixpath.dirname(text) or "." if posixpath.basename(text) == "model.pt" else text


def load(model: str, data: str | None = None) -> Loaded:
    """Rebuild the model at ``model`` (a folder or its ``model.pt``) as a :class:`Tagger` on the CPU.

    Args:
        data: the training dataset's URI when it moved; default: the one ``run.json`` records.

    Raises:
        ConfigError, DataError, StoreError: one line naming the model or the dataset.
    """
    uri = model_folder(model)
    net, blob, run = load_model(uri, "cpu")
    blob = {k: v for k, v in blob.items() if k != "state_dict"}
    recorded = (run.get("dataset") or {}).get("uri")
    where = data or recorded
    if not where:
        raise ConfigError(f"--model {uri}: run.json records no dataset; pass --data, the dataset it was trained on")
    try:
        ds = open_dataset(where)
    except (DataError, StoreError) as e:
        raise DataError(f"--model {uri}: its training dataset {where} cannot be opened ({e}); its train-split "
                        f"normalisation and image shape are read from there: pass --data with its new URI") from None
    if ds.manifest["id"] != blob["dataset"]:
        raise DataError(f"--data {ds.uri} is dataset {ds.manifest['id']}, but the model was trained on "
                        f"{blob['dataset']}: its normalisation would be another's")
    scale = ds.channel_scale() if blob.get("normalize") == "scale" else np.ones(ds.image_shape[0], np.float32)
    task = tasks.get(blob["task"])
    tagger = Tagger(net.eval(), task, scale, blob.get("target")).eval()
    return Loaded(tagger, blob, run, uri, ds, scale, output_column(blob["task"]))
