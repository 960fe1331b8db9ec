"""``pretrain``: SimCLR pretraining, on one process, torchrun in the pod, or several nodes."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def pretrain(dataset: Input[Dataset], run: str, encoder: Output[Model], preset: str = "auto",
             augment: str = "seed", seed: int = 0, nodes: int = 1, gpus_per_node: int = 1, image: str = "",
             secret: str = "jetlib-s3"):
    """Pretrain the ResNet-15 encoder with SimCLR into ``RUN/pretrain-s<seed>`` (resumes when retried).

    Args:
        dataset: the ingested dataset (its store URI in ``metadata["uri"]``).
        run: the run folder (``plan``'s ``run``).
        encoder: ``metadata["uri"]`` is the pretraining folder (``run.json``, ``encoder.pt``), with
            ``sha256`` of the encoder, ``dataset_id``, ``seed``, ``preset``, ``loss``, ``knn_accuracy``.
        preset: tiny, cpu, gpu, or auto (gpu when CUDA is visible).
        augment: seed or physics.
        seed: the pretraining seed.
        nodes: more than 1: a multi-node job through ``jetlib.launch`` (this pod only waits).
        gpus_per_node: more than 1 on one node: torchrun with that many processes in this pod.
        image: the training image for a multi-node job.
        secret: the Kubernetes Secret with the store credentials, for a multi-node job's pods.
    """
    import json

    from jetlib.workflow import pretrain_dir, pretrain_step

    out = pretrain_dir(run, seed)
    record = pretrain_step(dataset.metadata["uri"], out, preset=preset, augment=augment, seed=seed, nodes=nodes,
                           gpus_per_node=gpus_per_node, image=image, secret=secret)
    final = record.get("final", {})
    encoder.metadata.update(uri=out, sha256=record["encoder"]["sha256"], dataset_id=record["dataset"]["id"],
                            seed=seed, preset=record["config"]["preset"], loss=final.get("loss"),
                            knn_accuracy=final.get("knn_accuracy"))
    with open(encoder.path, "w") as f:
        json.dump(encoder.metadata, f, indent=1)
