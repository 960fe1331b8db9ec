"""What the KFP components need beyond one call into a step: the study plan, folder names,
pretraining dispatch (one process, torchrun in the pod, or a multi-node job) and the metrics
the Kubeflow UI shows.

The components in ``components/`` stay thin adapters; anything with a decision in it lives here,
where it is tested without KFP. The run folder layout (``DESIGN.md``, the report walks it by
content, never by name)::

    STORE/runs/<run>/pretrain-s<pseed>/                         pretraining (run.json, encoder.pt)
    STORE/runs/<run>/<task>-<mode>-f<fraction>-s<seed>[-p<pseed>]/   training (run.json, model.pt)
    STORE/runs/<run>/results/                                   evaluation results
    STORE/runs/<run>/report/                                    report.html, report.md, summary.json

``-p<pseed>`` names the encoder a ``finetune`` or ``linear`` run started from; ``scratch`` and
``vgg`` runs do not depend on pretraining and carry none.
"""

from __future__ import annotations

import logging
import os
import posixpath
import subprocess
import sys

from jetlib.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

# Every training the study knows, as "<task>-<mode>"; the pipeline's default runs them all.
MODES = ("cls-finetune", "reg-finetune", "cls-linear", "cls-scratch", "reg-scratch", "cls-vgg")
PRETRAINED = ("finetune", "linear")  # modes that start from the pretrained encoder


def plan(fractions: list, seeds: list, modes: list) -> tuple[list[dict], list[dict]]:
    """The study grid as two lists of loop items: ResNet runs and VGG runs.

    Args:
        fractions: label fractions in (0, 1], e.g. ``[0.01, 0.1]``.
        seeds: integer training seeds, e.g. ``[0, 1, 2]``.
        modes: a subset of :data:`MODES`.

    Returns:
        ``(runs, baselines)``: ``runs`` has one ``{"fraction", "seed", "problem", "mode"}`` per
        fraction x seed x ResNet mode (``problem`` is cls or reg: ``task`` is a reserved name in
        KFP's loop items); ``baselines`` one ``{"fraction", "seed"}`` per fraction x seed when
        ``cls-vgg`` is among the modes, else empty.

    Example:
        >>> runs, baselines = plan([0.1], [0, 1], ["cls-finetune", "cls-vgg"])
        >>> runs[1], baselines[1]
        ({'fraction': 0.1, 'seed': 1, 'problem': 'cls', 'mode': 'finetune'}, {'fraction': 0.1, 'seed': 1})
    """
    fractions = [_fraction(f) for f in fractions]
    seeds = [_seed(s) for s in seeds]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"modes: unknown {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"choose from {', '.join(MODES)}")
    if not fractions or not seeds:
        raise ConfigError("label_fractions and seeds must each name at least one value")
    resnet = [m for m in MODES if m in modes and not m.endswith("-vgg")]
    runs = [{"fraction": f, "seed": s, "problem": m.split("-")[0], "mode": m.split("-")[1]}
            for f in fractions for s in seeds for m in resnet]
    baselines = [{"fraction": f, "seed": s} for f in fractions for s in seeds] if "cls-vgg" in modes else []
    return runs, baselines


def _fraction(value) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"label_fractions: expected numbers, got {value!r}") from None
    if not 0 < f <= 1:
        raise ConfigError(f"label_fractions: each must be in (0, 1], got {f}")
    return f


def _seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ConfigError(f"seeds: expected whole numbers, got {value!r}")
    return int(value)


def run_dir(store: str, run_name: str) -> str:
    """``STORE/runs/<run_name>``: the folder the whole pipeline run writes into."""
    if not run_name or "/" in run_name or run_name in (".", ".."):
        raise ConfigError(f"run_name must be a non-empty folder name without '/', got {run_name!r}")
    return posixpath.join(store.rstrip("/"), "runs", run_name)


def pretrain_dir(run: str, pretrain_seed: int) -> str:
    return posixpath.join(run, f"pretrain-s{pretrain_seed}")


def training_dir(run: str, task: str, mode: str, fraction: float, seed: int, pretrain_seed: int | None) -> str:
    """A training step's folder inside the run folder (``-p<pseed>`` only for pretrained modes)."""
    tag = f"-p{pretrain_seed}" if mode in PRETRAINED and pretrain_seed is not None else ""
    return posixpath.join(run, f"{task}-{mode}-f{fraction:g}-s{seed}{tag}")


def training_config(step: str, preset: str, **values):
    """``make_config`` of ``jetlib.finetune`` or ``jetlib.baseline`` with ``preset`` auto resolved as the CLI does."""
    import importlib

    from jetlib.cli import _preset

    return importlib.import_module(f"jetlib.{step}").make_config(_preset(preset), **values)


def read_run(uri: str, fmt: str) -> dict:
    """A finished step's ``run.json`` (through :func:`jetlib.checkpoint.read_run_json`, the one reader):
    StoreError (exit 3) when the store cannot be read, ConfigError when ``uri`` holds no finished ``fmt`` step."""
    from jetlib.checkpoint import read_run_json

    return read_run_json(uri, formats=(fmt,), flag="step output")


def ingest_step(store: str, source: str = "", n_jets: int = 3000, sim_seed: int = 0,
                workers: int | None = None) -> dict:
    """Ingest ``source`` (a local path or ``s3://`` URI of an HDF5 file) into ``store``; with no
    source, simulate ``n_jets`` jets first. Returns the committed dataset's manifest plus its ``uri``.

    A simulated file is kept in the store (``sources/simulated-n<N>-s<seed>.h5``) so that a retried
    or re-run step ingests the same bytes (the same dataset id) without simulating again.
    """
    import tempfile

    from jetlib.data.ingest import ingest
    from jetlib.data.manifest import open_dataset
    from jetlib.data.store import open_store

    with tempfile.TemporaryDirectory(prefix="jetlib-source-", dir=os.environ.get("JETLIB_TMPDIR")) as tmp:
        name = None
        if source.startswith("s3://"):
            parent, key = source.rsplit("/", 1)
            path = os.path.join(tmp, key)
            open_store(parent).get_file(key, path)
        elif source:
            path = source
        else:
            from jetlib.data.simulate import SimConfig, simulate

            name = f"simulated-n{n_jets}-s{sim_seed}"
            key, path, st = f"sources/{name}.h5", os.path.join(tmp, f"{name}.h5"), open_store(store)
            if st.exists(key):
                st.get_file(key, path)
            else:
                simulate(SimConfig(n_jets=n_jets, seed=sim_seed), path, workers=workers or None)
                st.put_file(key, path)
        uri = ingest(path, store, name=name)
    ds = open_dataset(uri)
    return {**ds.manifest, "uri": ds.uri}


def pretrain_step(data: str, out: str, *, preset: str, augment: str, seed: int, nodes: int = 1,
                  gpus_per_node: int = 1, image: str = "", secret: str | None = None,
                  device: str = "auto") -> dict:
    """Pretrain on one process, on ``gpus_per_node`` processes under torchrun in this pod, or on
    ``nodes`` pods through :func:`jetlib.launch.launch_pretrain`; returns the pretraining run.json.

    Each path ends with the same ``out`` folder, so a retried step resumes from its checkpoints.
    """
    if nodes < 1 or gpus_per_node < 0:
        raise ConfigError(f"need nodes >= 1 and gpus_per_node >= 0, got {nodes} and {gpus_per_node}")
    from jetlib.cli import _preset

    preset = _preset(preset)
    if nodes > 1:
        from jetlib.launch import launch_pretrain

        log.info("pretraining on %d nodes x %d GPUs through the cluster launcher", nodes, gpus_per_node)
        return launch_pretrain(data=data, out=out, nodes=nodes, gpus_per_node=gpus_per_node, image=image,
                               preset=preset, augment=augment, extra_args=["--seed", str(seed)], secret=secret)
    if gpus_per_node > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus_per_node}",
               "-m", "jetlib", "pretrain", "--data", data, "--out", out, "--preset", preset,
               "--augment", augment, "--seed", str(seed)]
        log.info("pretraining under torchrun: %s", " ".join(cmd))
        code = subprocess.run(cmd, env=os.environ.copy()).returncode  # workers' logs go straight to the pod's
        if code:
            raise TrainingError(f"torchrun pretraining on {gpus_per_node} GPUs exited with status {code}")
    else:
        from jetlib.pretrain import make_config, pretrain

        pretrain(data, out, make_config(preset, augment=augment, seed=seed), device=device)
    return read_run(out, "jetlib.pretrain/1")


def result_metrics(result: dict) -> dict[str, float]:
    """The scalars an evaluate step logs to its ``Metrics`` artifact.

    The keys are fixed per task: the five classification (or regression) scores, plus
    ``label_fraction``, ``seed``, ``test_jets``, ``trainable_parameters``, ``train_seconds``.
    A score the result file holds as null (undefined on that test split, e.g. one class only)
    is skipped rather than faked, and named in the step's log, so two comparable runs show the
    same keys in the UI.
    """
    from jetlib.evaluate import CLS_KEYS, REG_KEYS  # the result file's own scalar keys, per task

    keys = CLS_KEYS if result["task"] == "cls" else REG_KEYS
    scalars = result["scalars"]
    undefined = [k for k in keys if scalars.get(k) is None]
    if undefined:
        log.warning("undefined on this test split, not logged: %s", ", ".join(undefined))
    out = {k: float(scalars[k]) for k in keys if scalars.get(k) is not None}
    res = result.get("resources", {})
    out.update(label_fraction=float(result["label_fraction"]), seed=float(result["seed"]),
               test_jets=float(result["dataset"]["jets"]),
               trainable_parameters=float(res.get("trainable_parameters", 0)),
               train_seconds=float(res.get("train_seconds", 0.0)))
    return out


def roc_points(result: dict, points: int | None = None) -> tuple[list[float], list[float], list[float]] | None:
    """(fpr, tpr, threshold) thinned to at most ``points`` for ``ClassificationMetrics.log_roc_curve``.

    The result file stores the curve on a grid of signal efficiencies, not of score thresholds,
    so the threshold column carries the signal efficiency (the working point) of each point.
    """
    from jetlib.metrics import ROC_POINTS  # what results store; older results may hold more points

    points = points or ROC_POINTS
    roc = (result.get("classification") or {}).get("roc")
    if not roc:
        return None
    n = len(roc["tpr"])
    idx = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)}) if n > points else range(n)
    fpr, tpr = [float(roc["fpr"][i]) for i in idx], [float(roc["tpr"][i]) for i in idx]
    return fpr, tpr, list(tpr)
