"""Where a pretraining runs: one process, torchrun over this pod's GPUs, or a multi-node job.

The pipeline's ``pretrain`` component calls :func:`pretrain_step`; the decision (which preset,
which device, which launcher) is made here, beside :mod:`jetlib.pretrain` and :mod:`jetlib.cluster`,
so that it is tested without KFP and a person running ``jetlib pretrain`` by hand gets the same.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from jetlib.errors import ConfigError, TrainingError
from jetlib.methods import DEFAULT_METHOD
from jetlib.records import PRETRAIN, read_run_json

log = logging.getLogger(__name__)


def check_counts(nodes: int, gpus_per_node: int) -> None:
    """Refuse node and GPU counts below range (exit 2): the one check ``pretrain_gpus`` and the step share."""
    if nodes < 1 or gpus_per_node < 0:
        raise ConfigError(f"need nodes >= 1 and gpus_per_node >= 0, got {nodes} and {gpus_per_node}")


def pretrain_requests(nodes: int, training: tuple[str, str], waiting: tuple[str, str]) -> tuple[str, str]:
    """``(cpu, memory)`` the pretraining pod requests: ``training``'s on one node, where it trains, and
    ``waiting``'s (a plan step's) when ``nodes > 1``, where it only submits and watches the job: the
    scheduler must not hold a GPU node's CPUs and memory for a pod that waits on the job's workers."""
    check_counts(nodes, 0)
    return waiting if nodes > 1 else training


def pretrain_placement(preset: str, nodes: int, gpus_per_node: int, visible_gpus: int | None = None) -> tuple[str, str]:
    """``(preset, device)`` for a pretraining asked to run on ``nodes`` x ``gpus_per_node``.

    ``gpus_per_node`` is what the run asked for, so it decides, not what this pod happens to see:
    0 is a CPU run (``auto`` means ``cpu``, the device is the CPU even where a GPU is visible); at
    least 1 on one node must find that many CUDA devices here, or the step refuses rather than
    train the CPU preset for hours on a pod that silently got no GPU (a KFP 2.17 backend sets no
    GPU limit for a count it cannot read, docs/workflow.md). With ``nodes > 1`` this pod only
    waits (it asks for no GPU) and the workers run ``preset``, ``auto`` meaning ``gpu`` for GPU workers.

    Raises:
        ConfigError: GPUs asked for on one node and fewer visible (exit 2), or counts below range.
    """
    check_counts(nodes, gpus_per_node)
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


def pretrain_step(data: str, out: str, *, preset: str, augment: str, seed: int, method: str = DEFAULT_METHOD,
                  encoder: str = "resnet", nodes: int = 1, gpus_per_node: int = 0, image: str = "",
                  secret: str | None = None, visible_gpus: int | None = None, recipe: str = "") -> dict:
    """Pretrain on one process, on ``gpus_per_node`` processes under torchrun in this pod, or on
    ``nodes`` pods through :func:`jetlib.cluster.launch_pretrain`; returns the pretraining run.json.

    ``preset`` and the device follow from what the run asked for (:func:`pretrain_placement`);
    each path ends with the same ``out`` folder, so a retried step resumes from its checkpoints.
    ``method`` (a name in ``jetlib.methods.METHODS``), ``encoder`` (a name in ``jetlib.models.ARCHS``) and
    ``seed`` reach every path the same way, and so does ``recipe``: a tuned recipe's URI (a path or a store
    URI, :func:`jetlib.tune.recipe.read_recipe`), empty for the method's own.
    """
    preset, device = pretrain_placement(preset, nodes, gpus_per_node, visible_gpus)
    # what every launcher passes on to `jetlib pretrain`
    flags = ["--seed", str(seed), "--method", method, "--encoder", encoder, *(["--recipe", recipe] if recipe else [])]
    if nodes > 1:
        from jetlib.cluster import launch_pretrain

        log.info("pretraining on %d nodes x %d GPUs through the cluster launcher", nodes, gpus_per_node)
        return launch_pretrain(data=data, out=out, nodes=nodes, gpus_per_node=gpus_per_node, image=image,
                               preset=preset, augment=augment, extra_args=flags, secret=secret)
    if gpus_per_node > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus_per_node}",
               "-m", "jetlib", "pretrain", "--data", data, "--out", out, "--preset", preset,
               "--augment", augment, *flags]
        log.info("pretraining under torchrun: %s", " ".join(cmd))
        code = subprocess.run(cmd, env=os.environ.copy()).returncode  # workers' logs go straight to the pod's
        if code:
            raise TrainingError(f"torchrun pretraining on {gpus_per_node} GPUs exited with status {code}")
    else:
        from jetlib.pretrain import make_config, pretrain
        from jetlib.tune.recipe import read_recipe

        tuned = read_recipe(recipe) if recipe else None
        pretrain(data, out, make_config(preset, tuned, augment=augment, seed=seed, method=method, encoder=encoder),
                 device=device)
    return read_run_json(out, PRETRAIN, "step output")
