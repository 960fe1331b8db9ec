"""``finetune``: a ResNet-15 classifier or mass regressor, from the pretrained encoder or from scratch."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def finetune(dataset: Input[Dataset], encoder: Input[Model], run: str, problem: str, mode: str,
             label_fraction: float, seed: int, model: Output[Model], preset: str = "auto", augment: str = "none"):
    """Train one (task, mode, label fraction, seed) into ``RUN/<task>-<mode>-f<fraction>-s<seed>[-p<pseed>]``.

    Args:
        dataset: the ingested dataset (store URI in ``metadata["uri"]``).
        encoder: the pretraining output; used by ``finetune`` and ``linear``, ignored by ``scratch``.
        run: the run folder.
        problem: cls (quark vs gluon) or reg (jet mass).
        mode: finetune (end to end), linear (frozen encoder) or scratch (random init).
        label_fraction: one of the dataset's nested label subsets.
        seed: the training seed.
        model: ``metadata["uri"]`` is the training folder (``run.json``, ``model.pt``), with the
            model's ``sha256``, ``task``, ``mode``, ``label_fraction``, ``seed``, ``best_epoch``.
        preset: tiny, cpu, gpu or auto.
        augment: none, seed or physics (mild augmentation of training batches).
    """
    import json

    from jetlib.finetune import finetune as train
    from jetlib.workflow import PRETRAINED, training_config, training_dir

    pretrained = mode in PRETRAINED
    out = training_dir(run, problem, mode, label_fraction, seed, int(encoder.metadata["seed"]) if pretrained else None)
    cfg = training_config("finetune", preset, task=problem, mode=mode, label_fraction=label_fraction, seed=seed,
                          augment=augment)
    record = train(dataset.metadata["uri"], out, cfg, init=encoder.metadata["uri"] if pretrained else None)
    model.metadata.update(uri=out, sha256=record["model"]["sha256"], task=problem, mode=mode,
                          label_fraction=label_fraction, seed=seed, best_epoch=record["training"].get("best_epoch"))
    with open(model.path, "w") as f:
        json.dump(model.metadata, f, indent=1)
