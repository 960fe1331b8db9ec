"""``pretrain``: self-supervised pretraining (SimCLR, VICReg, ...), on one process, torchrun in the pod, or
several nodes."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def pretrain(dataset: Input[Dataset], run: str, encoder: Output[Model], preset: str = "auto",
             augment: str = "seed", method: str = "", arch: str = "resnet", seed: int = 0, nodes: int = 1,
             gpus_per_node: int = 0, image: str = "", secret: str = "jetlib-s3", tune_trials: int = 0,
             tune_epochs: int = 0):
    """Pretrain the network ``arch`` with ``method`` into ``RUN/pretrain-<method>-s<seed>`` (resumes when retried).

    Args:
        dataset: the ingested dataset (its store URI in ``metadata["uri"]``).
        run: the run folder (``plan``'s ``run``).
        encoder: ``metadata["uri"]`` is the pretraining folder (``run.json``, ``encoder.pt``), with
            ``sha256`` of the encoder, ``dataset_id``, ``method``, ``seed``, ``preset``, ``loss`` and ``knn_accuracy``
            (absent when undefined: an unlabelled dataset or ``monitor_bank=0`` has no k-NN monitor).
        preset: tiny, cpu, gpu, or auto (gpu when GPUs were asked for, else cpu).
        augment: seed or physics.
        method: a name in ``jetlib.methods.METHODS``; empty: ``jetlib.methods.DEFAULT_METHOD``.
        arch: the network pretrained, a name in ``jetlib.models.ARCHS`` (resnet: the ResNet-15).
        seed: the pretraining seed.
        nodes: more than 1: a multi-node job through ``jetlib.cluster`` (this pod only waits).
        gpus_per_node: GPUs asked for per node: 0 trains on the CPU; at least 1 on one node refuses
            (exit 2) unless this pod sees that many CUDA devices; more than 1: torchrun in this pod.
        image: the training image for a multi-node job.
        secret: the Kubernetes Secret with the store credentials, for a multi-node job's pods.
        tune_trials: 0: the method's own recipe; more: the recipe the method's tune step left in
            ``RUN/tune/<method>/recipe.json`` (``jetlib.tune.step.recipe_uri``). With ``tune_epochs``, the
            search's settings are part of this step's cache key: a longer search is a new pretraining.
        tune_epochs: the tune step's epochs per trial (only a cache key here).
    """
    from jetlib.methods import DEFAULT_METHOD
    from jetlib.placement import pretrain_step
    from jetlib.steps import describe, step_errors
    from jetlib.study import pretrain_dir
    from jetlib.tune.step import recipe_uri

    method = method or DEFAULT_METHOD  # the registry's default, spelled once (a default here is copied into the YAML)
    out = pretrain_dir(run, seed, method)
    recipe = recipe_uri(run, method) if tune_trials > 0 else ""
    with step_errors():
        record = pretrain_step(dataset.metadata["uri"], out, preset=preset, augment=augment, seed=seed, method=method,
                               encoder=arch, nodes=nodes, gpus_per_node=gpus_per_node, image=image, secret=secret,
                               recipe=recipe)
    final = record.get("final", {})
    describe(encoder, {
        "uri": out, "sha256": record["encoder"]["sha256"], "dataset_id": record["dataset"]["id"], "method": method,
        "arch": arch, "seed": seed, "preset": record["config"]["preset"], "display_name": f"encoder {method} s{seed}",
        "loss": final.get("loss"), "knn_accuracy": final.get("knn_accuracy"), "recipe": recipe})
