"""The schemas of the records jetlib reads back: ``run.json`` of each format, ``encoder.pt``, ``model.pt``,
an evaluation's result and the ``metrics.json`` files.

A record is trusted for nothing before it passes its schema here: a method or a seed that names
a folder, a label fraction or a task that names a result file, a config that sizes a network.
The models are strict (a seed is a JSON integer, not ``"3"`` or ``3.0``; a missing key is
refused) and allow keys they do not name (a record from a newer jetlib keeps its extras); the
format versions stay :mod:`jetlib.records`' (``jetlib.pretrain/2``, ``jetlib.model/2``,
``jetlib.result/2``). Floats may be ``null``: :func:`jetlib.records.record_bytes` writes a
non-finite value so.

:func:`check_record` is the one entry point: one :class:`~jetlib.errors.DataError` line (exit 2)
naming the file, the field, what would be accepted and the value.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from jetlib.errors import DataError
from jetlib.schemas import (
    MAX_STEPS,
    BatchSize,
    Count,
    Fraction,
    LearningRate,
    Name,
    NonNegCount,
    Seed,
    Text,
    WeightDecay,
    one_of,
    parse,
    real,
    whole,
)

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# a dataset's id: the 12 hex digits jetlib.data.ingest derives (any short token from an older one)
DatasetId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")]
Normalize = one_of(("scale", "none"), "loader normalisations")  # jetlib.data.loader.NORMALIZE
Seconds = real(ge=0, le=1e9)
# an artifact's key: a file in the run's own folder (jetlib.data.keys.confine checks it again)
ArtifactKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
ScalarKey = Annotated[str, Field(pattern=r"^[a-z0-9_.]{1,64}$")]  # e.g. rejection_at_eps_s_0.5
_KEY = re.compile(r"[A-Za-z0-9_.]{1,256}")


def _tensors(state: dict) -> dict:
    for k, v in state.items():
        if not _KEY.fullmatch(k) or not (hasattr(v, "shape") and hasattr(v, "dtype")):
            raise ValueError(f"must map parameter names to tensors, got {k[:60]!r}: {type(v).__name__}")
    return state


StateDict = Annotated[dict[str, Any], AfterValidator(_tensors)]


class _Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, str_max_length=4096,
                              arbitrary_types_allowed=True)


class Artifact(_Record):
    key: ArtifactKey  # the object's key in the run's folder
    sha256: Sha256  # its checksum, verified when read


class DatasetRef(_Record):
    uri: Text  # the dataset's store URI when the step ran
    id: DatasetId  # the manifest's id


class PretrainRunConfig(_Record):
    seed: Seed  # names the fine-tunings' folders (``-p<seed>``)
    method: Name = "simclr"  # names them too; absent in a record from before methods were a choice


class PretrainRun(_Record):
    """``run.json`` of a pretraining (``jetlib.pretrain/2``)."""

    format: str
    encoder: Artifact
    config: PretrainRunConfig
    dataset: DatasetRef


class Training(_Record):
    best_epoch: whole(-1, MAX_STEPS) | None  # the epoch whose weights model.pt holds (-1: none improved)
    best_value: float | None  # its validation score (null: not finite)
    epochs_run: NonNegCount
    stopped_early: bool
    train_seconds: Seconds | None
    train_jets_per_s: Seconds | None


class ModelRun(_Record):
    """``run.json`` of a training (``jetlib.model/2``): fine-tuning, scratch or the VGG baseline."""

    format: str
    model: Artifact
    arch: Name
    task: Name
    mode: Name
    label_fraction: Fraction
    seed: Seed
    dataset: DatasetRef
    training: Training
    resources: dict[str, Any]
    config: dict[str, Any]
    labels: dict[str, Any] | None = None


class EncoderBlob(_Record):
    """``encoder.pt``: a pretrained encoder (its ``config`` is checked by the arch's own config class)."""

    arch: Name
    config: dict[str, Any]
    state_dict: StateDict
    normalize: Normalize
    dataset: DatasetId


class Origin(_Record):
    init: Text | None = None  # the --init URI
    encoder_sha256: Sha256 | None = None
    pretrain_seed: Seed | None = None
    method: Name | None = None


class ModelBlob(_Record):
    """``model.pt``: a trained network with its task's head."""

    arch: Name
    config: dict[str, Any]
    state_dict: StateDict
    task: Name
    head: dict[str, Any] | None = None
    mode: Name
    label_fraction: Fraction
    seed: Seed
    normalize: Normalize
    dataset: DatasetId
    target: dict[str, float | None] | None = None  # the regression target's mean and std
    origin: Origin | None = None


class ResultModel(_Record):
    uri: Text  # the training step's folder
    sha256: Sha256  # its model.pt
    arch: Name


class Result(_Record):
    """An evaluation's result file (``jetlib.result/2``): its name parts and what the report plots."""

    format: str
    task: Name
    mode: Name
    label_fraction: Fraction
    seed: Seed
    model: ResultModel
    dataset: DatasetRef
    scalars: dict[ScalarKey, float | None]  # every task's scalar keys (null: not this task's, or not finite)
    resources: dict[str, Any]
    training: Training
    config: dict[str, Any]
    origin: Origin | None = None


class Epoch(_Record):
    epoch: NonNegCount


class Metrics(_Record):
    """``metrics.json`` of a training: the per-epoch history beside the run record."""

    config: dict[str, Any]
    dataset: DatasetRef
    training: Training
    epochs: list[Epoch]


class PretrainMetrics(_Record):
    """``metrics.json`` of a pretraining: the per-epoch history (loss, lr, the monitors)."""

    step: str
    config: dict[str, Any]
    dataset: DatasetRef
    epochs: list[Epoch]


# --- a method's recipe and its search (jetlib.tune), as the report reads them back -----------------------------
MAX_TRIALS = 10_000  # trials one search may list: far beyond any budget, small enough to draw
MAX_PARAMS = 64  # method parameters one recipe or trial may set
Params = Annotated[dict[Name, Any], Field(max_length=MAX_PARAMS)]  # each value shown as text, never used


class PretrainRecipe(_Record):
    """The training recipe a pretraining's ``run.json`` ``config`` records (a field absent in an older record is
    None: shown as not recorded)."""

    method: Name = "simclr"
    preset: Name | None = None
    optimizer: Name | None = None
    lr: LearningRate | None = None  # per lr_batch jets when lr_batch > 0
    lr_batch: NonNegCount | None = None
    weight_decay: WeightDecay | None = None
    warmup_epochs: NonNegCount | None = None
    epochs: Count | None = None
    batch_size: BatchSize | None = None


class RecipeValues(_Record):
    """What a recipe file sets: jetlib.tune.recipe.TUNABLE and the method's parameters, nothing else."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, str_max_length=4096)
    lr: LearningRate | None = None
    weight_decay: WeightDecay | None = None
    lr_batch: NonNegCount | None = None
    optimizer: Name | None = None
    warmup_epochs: NonNegCount | None = None
    method_params: Params = {}


class Objective(_Record):
    name: Name  # knn_accuracy
    split: Name  # val: a search never reads the test split
    value: float | None


class SearchRef(_Record):
    name: Text  # the Optuna study
    trials: whole(0, MAX_TRIALS)
    best_trial: whole(0, MAX_STEPS) | None = None  # null: a Katib optimum no listed trial matched


class Recipe(_Record):
    """``recipe.json`` of a search (``jetlib.recipe/1``, :mod:`jetlib.tune.recipe`): one method's chosen values."""

    format: one_of(("jetlib.recipe/1",), "recipe formats")
    method: Name
    values: RecipeValues
    objective: Objective | None = None
    study: SearchRef | None = None
    preset: Name | None = None


class Trial(_Record):
    """One trial of a search, as :func:`jetlib.tune.study.history` lists it (``trials.json``: a list of these)."""

    study: Text
    number: whole(0, MAX_STEPS)
    state: one_of(("complete", "pruned", "fail", "running", "waiting"), "Optuna trial states")
    value: float | None  # the final objective (a complete trial's)
    epochs: Annotated[dict[Annotated[str, Field(pattern=r"^[0-9]{1,8}$")], float | None],
                      Field(max_length=MAX_STEPS)]  # the objective per epoch (JSON keys: the epoch as text)
    params: Params


Trials = Annotated[list[Trial], Field(max_length=MAX_TRIALS)]


def check_record(schema: type[BaseModel], record, where: str):
    """``record`` if it passes ``schema``; else one DataError line naming ``where`` and the field.

    The record itself is returned (strict: nothing was converted), so its extras stay readable.
    """
    parse(schema, record, where, DataError)
    return record
