"""``train``: one training of the study (fine-tune, linear probe, scratch or the VGG baseline)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def train(dataset: Input[Dataset], run: str, problem: str, mode: str, label_fraction: float, seed: int,
          model: Output[Model], encoder: str = "", preset: str = "auto", augment: str = "none", arch: str = "resnet"):
    """Train one (task, mode, label fraction, seed[, pretraining]) into its folder in ``RUN``
    (``<task>-<mode>-f<fraction>-s<seed>[-<method>-p<pseed>]``, ``jetlib.study.training_dir``).

    Args:
        dataset: the ingested dataset (store URI in ``metadata["uri"]``).
        run: the run folder.
        problem: cls (quark vs gluon) or reg (jet mass).
        mode: finetune (end to end), linear (frozen encoder), scratch (random init): the network
            ``arch`` of ``jetlib finetune``; vgg: the VGG + squeeze-excitation of ``jetlib baseline`` (cls only).
        label_fraction: one of the dataset's nested label subsets.
        seed: the training seed.
        model: ``metadata["uri"]`` is the training folder (``run.json``, ``model.pt``), with the
            model's ``sha256``, ``task``, ``mode``, ``label_fraction``, ``seed``, ``encoder``,
            ``display_name`` and ``best_epoch`` (absent when no epoch was selected).
        encoder: the pretraining folder ``finetune`` and ``linear`` start from (``match_encoders``
            gives each its own); empty for ``scratch`` and ``vgg``. A URI, not an artifact: the
            loop's items carry it, so one loop runs every training whatever it starts from.
        preset: tiny, cpu, gpu or auto.
        augment: none, seed or physics (mild augmentation of training batches; not for vgg).
        arch: the network a scratch training builds (the pretrained encoder's, so that scratch and
            fine-tuning compare one network); finetune and linear take their encoder's own.
    """
    import posixpath

    from jetlib.kfp_outputs import display_name
    from jetlib.steps import describe, step_errors, train_step

    with step_errors():
        out, record = train_step(dataset.metadata["uri"], run, problem=problem, mode=mode, fraction=label_fraction,
                                 seed=seed, preset=preset, augment=augment, encoder=encoder,
                                 arch=arch)
    name = display_name(problem, mode, label_fraction, seed)
    describe(model, {
        "uri": out, "sha256": record["model"]["sha256"], "task": problem, "mode": mode,
        "label_fraction": label_fraction, "seed": seed, "encoder": encoder,
        "display_name": f"{name} ({posixpath.basename(encoder)})" if encoder else name,
        "best_epoch": record["training"].get("best_epoch")})
