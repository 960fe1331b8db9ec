"""``baseline``: the supervised VGG + squeeze-excitation classifier."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def baseline(dataset: Input[Dataset], run: str, label_fraction: float, seed: int, model: Output[Model],
             preset: str = "auto"):
    """Train the VGG baseline on a label subset into ``RUN/cls-vgg-f<fraction>-s<seed>``.

    Args:
        dataset: the ingested dataset (store URI in ``metadata["uri"]``).
        run: the run folder.
        label_fraction: one of the dataset's nested label subsets.
        seed: the training seed.
        model: ``metadata["uri"]`` is the training folder, with the model's ``sha256``, ``task``,
            ``mode`` (vgg), ``label_fraction``, ``seed``, ``best_epoch``.
        preset: tiny, cpu, gpu or auto.
    """
    import json

    from jetlib.baseline import baseline as train
    from jetlib.workflow import training_config, training_dir

    out = training_dir(run, "cls", "vgg", label_fraction, seed, None)
    cfg = training_config("baseline", preset, label_fraction=label_fraction, seed=seed)
    record = train(dataset.metadata["uri"], out, cfg)
    model.metadata.update(uri=out, sha256=record["model"]["sha256"], task="cls", mode="vgg",
                          label_fraction=label_fraction, seed=seed, best_epoch=record["training"].get("best_epoch"))
    with open(model.path, "w") as f:
        json.dump(model.metadata, f, indent=1)
