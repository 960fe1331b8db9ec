"""The study's plan and the names of its folders: what the pipeline runs and where each step writes.

One module, imported by the KFP components, the report's "what is missing" and the tests' tiny
runs, so that a folder name is spelled once. It imports nothing heavy. The run folder layout
(``docs/design.md``; the report walks it by content, never by name)::

    STORE/runs/<run>/pretrain-<method>-s<pseed>/                         pretraining (run.json, encoder.pt)
    STORE/runs/<run>/<task>-<mode>-f<fraction>-s<seed>[-<method>-p<pseed>]/   training (run.json, model.pt)
    STORE/runs/<run>/results/                                            evaluation results
    STORE/runs/<run>/report/                                             report.html, report.md, summary.json

e.g. ``pretrain-simclr-s0`` and ``cls-finetune-f0.1-s2-simclr-p0``. ``-<method>-p<pseed>`` names the
encoder a ``finetune`` or ``linear`` run started from (every method spelled the same way, SimCLR
included, so that a folder says what it holds without knowing the default); ``scratch`` and
``vgg`` runs do not depend on pretraining and carry none.
"""

from __future__ import annotations

import posixpath
import re

from typing_extensions import TypedDict  # pydantic reads this one before Python 3.12

from jetlib.errors import ConfigError
from jetlib.methods import DEFAULT_METHOD
from jetlib.schemas import Fraction, Name, Seed, parse

# Every training the study knows, as "<task>-<mode>"; the pipeline's default runs them all.
MODES = ("cls-finetune", "reg-finetune", "cls-linear", "cls-scratch", "reg-scratch", "cls-vgg")
PRETRAINED = ("finetune", "linear")  # modes that start from the pretrained encoder
DEFAULT_METHODS = (DEFAULT_METHOD,)  # the pipeline's defaults: one pretraining, as before methods were a choice
DEFAULT_PRETRAIN_SEEDS = (0,)


class _FolderParts(TypedDict):
    """The parts of a training folder's name (:func:`training_dir`), each by its schema."""

    task: Name
    mode: Name
    fraction: Fraction
    seed: Seed
    pretrain_seed: Seed | None
    method: Name


def pretrainings(methods: list = DEFAULT_METHODS, pretrain_seeds: list = DEFAULT_PRETRAIN_SEEDS) -> list[dict]:
    """Every pretraining of the study, one ``{"method", "seed"}`` per method x pretraining seed.

    Never empty (checked here), so the pipeline's pretraining loop always runs and the step that
    collects its encoders has something to collect (docs/workflow.md).

    Raises:
        ConfigError: no method or seed, a method :mod:`jetlib.methods` does not know, a seed that
            is not a whole number, or a pair given twice.

    Example:
        >>> pretrainings(["simclr"], [0, 1])
        [{'method': 'simclr', 'seed': 0}, {'method': 'simclr', 'seed': 1}]
    """
    from jetlib.methods import METHODS  # imported here: the study plan itself needs no torch

    pseeds = parse(list[Seed], list(pretrain_seeds), "pretrain_seeds")  # seeds the training then accepts too
    methods = parse(list[Name], list(methods), "methods")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"methods: unknown {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"choose from {', '.join(METHODS)}")
    if not pseeds:
        raise ConfigError("pretrain_seeds must name at least one value")
    if len(set(methods)) < len(methods) or len(set(pseeds)) < len(pseeds):
        raise ConfigError(f"methods and pretrain_seeds must each name a value once, got {list(methods)} and {pseeds}")
    return [{"method": m, "seed": s} for m in methods for s in pseeds]


def check_settings(preset: str, augment: str, finetune_augment: str, encoder: str) -> None:
    """The run parameters that every pretraining or training step reads by name, checked before any
    work: a misspelt preset would otherwise fail each step after the simulation and ingest had run.

    Raises:
        ConfigError: one line naming the parameter, the value and what is accepted.
    """
    from jetlib.augment import PRESETS as AUGMENTS  # imported here: the study plan itself needs no torch
    from jetlib.models import ARCHS
    from jetlib.pretrain import PRESETS

    for name, value, accepted in (("preset", preset, ("auto", *PRESETS)), ("augment", augment, AUGMENTS),
                                  ("finetune_augment", finetune_augment, AUGMENTS), ("encoder", encoder, ARCHS)):
        if value not in accepted:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(accepted)}")


def plan(fractions: list, seeds: list, modes: list, methods: list = DEFAULT_METHODS,
         pretrain_seeds: list = DEFAULT_PRETRAIN_SEEDS) -> list[dict]:
    """The study grid as one list of loop items, every training (VGG included) in one list.

    One list, so the pipeline has one training loop and one fan-in: with ``modes`` non-empty and
    at least one fraction and seed (checked here) the loop never has zero iterations, which a KFP
    backend cannot collect (docs/workflow.md). A pretrained mode runs once per pretraining
    (:func:`pretrainings`: method x pretraining seed); scratch and VGG do not multiply.

    Args:
        fractions: label fractions in (0, 1], e.g. ``[0.01, 0.1]``.
        seeds: integer training seeds, e.g. ``[0, 1, 2]``.
        modes: a non-empty subset of :data:`MODES`.
        methods: pretraining methods (names in ``jetlib.methods.METHODS``).
        pretrain_seeds: pretraining seeds.

    Returns:
        One ``{"fraction", "seed", "problem", "mode"}`` per fraction x seed x mode (x pretraining,
        with ``"method"`` and ``"pretrain_seed"``, for a pretrained mode), in the order of
        :data:`MODES` (``problem`` is cls or reg: ``task`` is a reserved name in KFP's loop items;
        ``mode`` is finetune, linear, scratch or vgg).

    Example:
        >>> [(i["seed"], i["mode"]) for i in plan([0.1], [0, 1], ["cls-vgg", "cls-finetune"])]
        [(0, 'finetune'), (0, 'vgg'), (1, 'finetune'), (1, 'vgg')]
    """
    fractions = parse(list[Fraction], list(fractions), "label_fractions")
    seeds = parse(list[Seed], list(seeds), "seeds")  # the bounds of FinetuneConfig.seed: refused here, not later
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"modes: unknown {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"choose from {', '.join(MODES)}")
    if not fractions or not seeds:
        raise ConfigError("label_fractions and seeds must each name at least one value")
    pre = [{"method": p["method"], "pretrain_seed": p["seed"]} for p in pretrainings(methods, pretrain_seeds)]
    chosen = [m.split("-") for m in MODES if m in modes]
    return [{"fraction": f, "seed": s, "problem": task, "mode": mode, **p}
            for f in fractions for s in seeds for task, mode in chosen
            for p in (pre if mode in PRETRAINED else [{}])]


# A run folder's name: what a KFP run id (a UUID), a Kubernetes object name and a person's
# "exp1" all match, and nothing that could leave ``STORE/runs/`` or needs quoting.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def run_dir(store: str, run_name: str) -> str:
    """``STORE/runs/<run_name>``: the folder the whole pipeline run writes into.

    Raises:
        ConfigError: ``run_name`` cannot be one folder name (empty, ``/``, ``..``, spaces, an
            unresolved ``{{$.placeholder}}``, more than 128 characters).
    """
    if not isinstance(run_name, str) or not RUN_NAME.fullmatch(run_name) or ".." in run_name:
        raise ConfigError(f"run_name must be one folder name (letters, digits, '.', '_', '-'; starting with a "
                          f"letter or digit; at most 128), got {run_name!r}")
    return posixpath.join(store.rstrip("/"), "runs", run_name)


def pretrain_dir(run: str, pretrain_seed: int, method: str = DEFAULT_METHOD) -> str:
    """A pretraining's folder inside the run folder, e.g. ``RUN/pretrain-simclr-s0``.

    Raises:
        ConfigError: a seed or method that cannot be part of one folder name (its schema).
    """
    parse(Seed, pretrain_seed, "pretrain seed"), parse(Name, method, "method")
    return posixpath.join(run, f"pretrain-{method}-s{pretrain_seed}")


def training_dir(run: str, task: str, mode: str, fraction: float, seed: int, pretrain_seed: int | None,
                 method: str = DEFAULT_METHOD) -> str:
    """A training step's folder inside the run folder, e.g. ``RUN/cls-finetune-f0.1-s2-simclr-p0``
    (``-<method>-p<pseed>`` only for pretrained modes).

    Every part passes its schema first: a method or seed read back from a record names a folder
    here, and ``../x`` or ``"abc"`` must not.

    Raises:
        ConfigError: a part that cannot be part of one folder name.
    """
    parse(_FolderParts, {"task": task, "mode": mode, "fraction": fraction, "seed": seed,
                         "pretrain_seed": pretrain_seed, "method": method}, "training folder")
    tag = f"-{method}-p{pretrain_seed}" if mode in PRETRAINED and pretrain_seed is not None else ""
    return posixpath.join(run, f"{task}-{mode}-f{fraction:g}-s{seed}{tag}")


def match_encoders(trainings: list[dict], encoders: list[dict]) -> list[dict]:
    """The training loop's items, each with ``"encoder"``: the URI of the pretraining it starts from.

    ``encoders`` are the pretraining steps' outputs (``{"method", "seed", "uri"}``, what the
    ``pretrain`` component hands on); a pretrained item takes the one of its ``method`` and
    ``pretrain_seed``, any other item ``""``. Items come back in the order given, never fewer.

    Raises:
        ConfigError: a pretrained item whose pretraining is not among ``encoders``.
    """
    uris = {(parse(Name, e.get("method", DEFAULT_METHOD), "encoder method"),
             parse(Seed, e.get("seed"), "encoder seed")): e.get("uri") for e in encoders}
    out = []
    for item in trainings:
        key = (item.get("method"), item.get("pretrain_seed")) if item["mode"] in PRETRAINED else None
        if key is not None and key not in uris:
            raise ConfigError(f"{item['problem']}-{item['mode']} starts from the {key[0]} pretraining with seed "
                              f"{key[1]}, but the pretrainings were {sorted(uris) or 'none'}")
        out.append({**item, "encoder": uris[key] if key else ""})
    return out
