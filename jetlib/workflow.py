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

import contextlib
import logging
import os
import posixpath
import re
import subprocess
import sys

from jetlib.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

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
    fractions = [_fraction(f) for f in fractions]
    seeds = [_seed(s) for s in seeds]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ConfigError(f"modes: unknown {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"choose from {', '.join(MODES)}")
    if not fractions or not seeds:
        raise ConfigError("label_fractions and seeds must each name at least one value")
    chosen = [m.split("-") for m in MODES if m in modes]
    return [{"fraction": f, "seed": s, "problem": task, "mode": mode}
            for f in fractions for s in seeds for task, mode in chosen]


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
    return posixpath.join(run, f"pretrain-s{pretrain_seed}")


def training_dir(run: str, task: str, mode: str, fraction: float, seed: int, pretrain_seed: int | None) -> str:
    """A training step's folder inside the run folder (``-p<pseed>`` only for pretrained modes)."""
    tag = f"-p{pretrain_seed}" if mode in PRETRAINED and pretrain_seed is not None else ""
    return posixpath.join(run, f"{task}-{mode}-f{fraction:g}-s{seed}{tag}")


def training_config(step: str, preset: str, **values):
    """``make_config`` of ``jetlib.finetune`` or ``jetlib.baseline`` with ``preset`` auto resolved as the CLI does."""
    import importlib

    from jetlib.config import resolve_preset

    return importlib.import_module(f"jetlib.{step}").make_config(resolve_preset(preset), **values)


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


def pretrain_placement(preset: str, nodes: int, gpus_per_node: int, visible_gpus: int | None = None) -> tuple[str, str]:
    """``(preset, device)`` for a pretraining asked to run on ``nodes`` x ``gpus_per_node``.

    ``gpus_per_node`` is what the run asked for, so it decides, not what this pod happens to see:
    0 is a CPU run (``auto`` means ``cpu``, the device is the CPU even where a GPU is visible); at
    least 1 on one node must find that many CUDA devices here, or the step refuses rather than
    train the CPU preset for hours on a pod that silently got no GPU (a KFP 2.17 backend sets no
    GPU limit for a count it cannot read, README "The workflow"). With ``nodes > 1`` this pod only
    waits (it asks for no GPU) and the workers run ``preset``, ``auto`` meaning ``gpu`` for GPU workers.

    Raises:
        ConfigError: GPUs asked for on one node and fewer visible (exit 2), or counts below range.
    """
    if nodes < 1 or gpus_per_node < 0:
        raise ConfigError(f"need nodes >= 1 and gpus_per_node >= 0, got {nodes} and {gpus_per_node}")
    if gpus_per_node == 0:
        return ("cpu" if preset == "auto" else preset), "cpu"
    if nodes == 1:
        if visible_gpus is None:
            import torch

            visible_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if visible_gpus < gpus_per_node:
            raise ConfigError(f"gpus_per_node={gpus_per_node} but this pod sees {visible_gpus} CUDA device(s): "
                              f"refusing to fall back to the CPU preset (check the pod's nvidia.com/gpu limit and "
                              f"the node's driver, or run with gpus_per_node=0 to pretrain on the CPU)")
    return ("gpu" if preset == "auto" else preset), ("cuda" if nodes == 1 else "auto")


def pretrain_step(data: str, out: str, *, preset: str, augment: str, seed: int, nodes: int = 1,
                  gpus_per_node: int = 0, image: str = "", secret: str | None = None,
                  visible_gpus: int | None = None) -> dict:
    """Pretrain on one process, on ``gpus_per_node`` processes under torchrun in this pod, or on
    ``nodes`` pods through :func:`jetlib.launch.launch_pretrain`; returns the pretraining run.json.

    ``preset`` and the device follow from what the run asked for (:func:`pretrain_placement`);
    each path ends with the same ``out`` folder, so a retried step resumes from its checkpoints.
    """
    preset, device = pretrain_placement(preset, nodes, gpus_per_node, visible_gpus)
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


def train_step(data: str, run: str, *, problem: str, mode: str, fraction: float, seed: int, preset: str,
               augment: str = "none", encoder: dict | None = None) -> tuple[str, dict]:
    """One training of the study: ``finetune``, ``linear`` or ``scratch`` (jetlib.finetune) or ``vgg``
    (jetlib.baseline), into its folder in ``run``; returns ``(folder, run.json)``.

    ``encoder`` is the pretraining artifact's metadata (``uri``, ``seed``), used by the pretrained
    modes only. One dispatcher, so the pipeline has one loop over every training (see :func:`plan`).
    """
    if f"{problem}-{mode}" not in MODES:
        raise ConfigError(f"no training {problem}-{mode}; choose from {', '.join(MODES)}")
    if mode == "vgg":
        from jetlib.baseline import baseline

        out = training_dir(run, problem, mode, fraction, seed, None)
        return out, baseline(data, out, training_config("baseline", preset, label_fraction=fraction, seed=seed))
    from jetlib.finetune import finetune

    pretrained = mode in PRETRAINED
    if pretrained and not (encoder or {}).get("uri"):
        raise ConfigError(f"{problem}-{mode} starts from the pretrained encoder, but none was given")
    out = training_dir(run, problem, mode, fraction, seed, int(encoder["seed"]) if pretrained else None)
    cfg = training_config("finetune", preset, task=problem, mode=mode, label_fraction=fraction, seed=seed,
                          augment=augment)
    return out, finetune(data, out, cfg, init=encoder["uri"] if pretrained else None)


@contextlib.contextmanager
def step_errors():
    """Inside a KFP component: a jetlib error becomes its one line on stderr and the CLI's exit code.

    What the pod log and the KFP UI then show is the reason (``ConfigError``: exit 2, store: 3,
    training: 4, out of memory: 5), as ``jetlib <step>`` prints it, instead of a traceback through the executor.
    """
    from jetlib.errors import JetlibError, ResourceError, one_line, out_of_memory, out_of_memory_line

    try:
        yield
    except JetlibError as e:
        print(f"jetlib: error: {one_line(e)}", file=sys.stderr, flush=True)
        raise SystemExit(e.exit_code) from None
    except Exception as e:  # the machine, not a bug: the CLI's line and exit code; a bug keeps its traceback
        if not out_of_memory(e):
            raise
        print(f"jetlib: error: {out_of_memory_line(e)}", file=sys.stderr, flush=True)
        raise SystemExit(ResourceError.exit_code) from None
