"""The study's plan and the names of its folders: what the pipeline runs and where each step writes.

One module, imported by the KFP components, the report's "what is missing" and the tests' tiny
runs, so that a folder name is spelled once. It imports nothing heavy. The run folder layout
(``DESIGN.md``; the report walks it by content, never by name)::

    STORE/runs/<run>/pretrain-s<pseed>/                         pretraining (run.json, encoder.pt)
    STORE/runs/<run>/<task>-<mode>-f<fraction>-s<seed>[-p<pseed>]/   training (run.json, model.pt)
    STORE/runs/<run>/results/                                   evaluation results
    STORE/runs/<run>/report/                                    report.html, report.md, summary.json

``-p<pseed>`` names the encoder a ``finetune`` or ``linear`` run started from; ``scratch`` and
``vgg`` runs do not depend on pretraining and carry none.
"""

from __future__ import annotations

import posixpath
import re

from jetlib import checks
from jetlib.errors import ConfigError

# Every training the study knows, as "<task>-<mode>"; the pipeline's default runs them all.
MODES = ("cls-finetune", "reg-finetune", "cls-linear", "cls-scratch", "reg-scratch", "cls-vgg")
PRETRAINED = ("finetune", "linear")  # modes that start from the pretrained encoder


def plan(fractions: list, seeds: list, modes: list) -> list[dict]:
    """The study grid as one list of loop items, every training (VGG included) in one list.

    One list, so the pipeline has one loop and one fan-in: with ``modes`` non-empty and at least
    one fraction and seed (checked here) the loop never has zero iterations, which a KFP backend
    cannot collect (README, "The workflow").

    Args:
        fractions: label fractions in (0, 1], e.g. ``[0.01, 0.1]``.
        seeds: integer training seeds, e.g. ``[0, 1, 2]``.
        modes: a non-empty subset of :data:`MODES`.

    Returns:
        One ``{"fraction", "seed", "problem", "mode"}`` per fraction x seed x mode, in the order of
        :data:`MODES` (``problem`` is cls or reg: ``task`` is a reserved name in KFP's loop items;
        ``mode`` is finetune, linear, scratch or vgg).

    Example:
        >>> [(i["seed"], i["mode"]) for i in plan([0.1], [0, 1], ["cls-vgg", "cls-finetune"])]
        [(0, 'finetune'), (0, 'vgg'), (1, 'finetune'), (1, 'vgg')]
    """
    fractions = [checks.fraction(f, "label_fractions") for f in fractions]
    seeds = [checks.whole(s, "seeds") for s in seeds]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"modes: unknown {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"choose from {', '.join(MODES)}")
    if not fractions or not seeds:
        raise ConfigError("label_fractions and seeds must each name at least one value")
    chosen = [m.split("-") for m in MODES if m in modes]
    return [{"fraction": f, "seed": s, "problem": task, "mode": mode}
            for f in fractions for s in seeds for task, mode in chosen]


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


def pretrain_dir(run: str, pretrain_seed: int) -> str:
    """A pretraining's folder inside the run folder."""
    return posixpath.join(run, f"pretrain-s{pretrain_seed}")


def training_dir(run: str, task: str, mode: str, fraction: float, seed: int, pretrain_seed: int | None) -> str:
    """A training step's folder inside the run folder (``-p<pseed>`` only for pretrained modes)."""
    tag = f"-p{pretrain_seed}" if mode in PRETRAINED and pretrain_seed is not None else ""
    return posixpath.join(run, f"{task}-{mode}-f{fraction:g}-s{seed}{tag}")
