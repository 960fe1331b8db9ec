"""Networks, and the one place that builds and rebuilds them.

``resnet`` (the ResNet-15 encoder, named widths in :data:`~jetlib.models.resnet.VARIANTS`),
``vit`` (a small vision transformer on 5x5 patches, :mod:`~jetlib.models.vit`), ``vgg`` (the
supervised baseline), ``heads`` (projector, classifier, regressor). Every network is an
:class:`~jetlib.models.base.Encoder` (``forward_features`` / ``forward_head`` / ``reset_head``)
registered by name: :func:`create` builds one, :func:`from_blob` rebuilds the one a saved
``model.pt`` or ``encoder.pt`` records (its ``arch``, ``config``, ``task``, ``head``), weights loaded.

A network's keyword arguments are its config (:func:`config_class`: the dataclass it registers,
or its factory's signature read into one); a step sizes it by its preset's variant and then
``--set model.NAME=VALUE``, each checked against those arguments (:func:`step_model`).

A new network is one file with a registered factory, plus its name -> module line in
:data:`~jetlib.models.registry.BUILTIN` (the tasks and the methods register the same way)::

    @register_model("mynet", variants={"tiny": {"width": 8}})
    class MyNet(Encoder):
        def __init__(self, in_channels=3, width=32): ...
        def forward_features(self, x): ...  # (B, C, H, W) -> (B, num_features)

Model files hold only ``nn.Module``s and their config dataclasses; they never import training code.
"""

from jetlib.models.base import Encoder
from jetlib.models.registry import (
    ARCHS,
    BUILTIN,
    arch_of,
    available,
    config_class,
    create,
    from_blob,
    model_config,
    register_model,
    settable,
    step_model,
    unregister_model,
    variant,
)

# the ResNet's and the VGG's configs, for the steps' typed ``model`` fields (importing them registers both)
from jetlib.models.resnet import VARIANTS, ResNet, ResNetConfig, resnet15
from jetlib.models.vgg import VGG, VGGConfig

__all__ = ["ARCHS", "BUILTIN", "VARIANTS", "VGG", "Encoder", "ResNet", "ResNetConfig", "VGGConfig", "arch_of",
           "available", "config_class", "create", "from_blob", "model_config", "register_model", "resnet15",
           "settable", "step_model", "unregister_model", "variant"]
