"""Pretraining methods: one file per method, one line to register it.

A method is an ``nn.Module`` that owns the encoder, its own heads (projector, predictor,
target network) and its loss, so that DDP syncs everything trained with the weights and a
checkpoint holds everything a resume needs. :func:`jetlib.pretrain.pretrain` drives any of
them through the same loop, augmentations, loader, checkpoints and resume, and names none.

Adding a method is one new file, ``jetlib/methods/<name>.py`` (:class:`~jetlib.methods.base.Method`
is the base class)::

    @dataclass(frozen=True)
    class MyParams:          # the method's hyperparameters, defaults from its paper
        proj_hidden: int = 512
        proj_dim: int = 128

    @register_method("mine")
    class Mine(Method):
        Params = MyParams
        def __init__(self, encoder, params): ...
        def forward(self, v1, v2): ...   # two views -> scalar loss

and its name -> module line in :data:`BUILTIN` below (so ``--method`` lists it without an import;
the networks and the tasks register the same way). Its
hyperparameters reach it from the config's ``method_params`` dict (``--set
method_params.proj_dim=64``), checked against ``Params``: an unknown name or a bad value is
one :class:`~jetlib.errors.ConfigError` line.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from jetlib.config import override
from jetlib.errors import ConfigError
from jetlib.registry import Registry

DEFAULT_METHOD = "simclr"  # the default, and what a record written before methods were a choice means

# the built-in methods: name -> the module that registers it (imported on first use); a test or
# plugin registers its own directly
BUILTIN = {
    "barlowtwins": "jetlib.methods.barlowtwins",
    "byol": "jetlib.methods.byol",
    "simclr": "jetlib.methods.simclr",
    "vicreg": "jetlib.methods.vicreg",
}

if TYPE_CHECKING:
    from torch import nn

    from jetlib.methods.base import Method


def _checked(name: str, cls):
    from jetlib.methods.base import Method

    if not (isinstance(cls, type) and issubclass(cls, Method) and dataclasses.is_dataclass(cls.Params)):
        raise TypeError(f"{name}: a method is a Method subclass with a Params dataclass")
    cls.name = name
    return cls


_REGISTRY = Registry("pretraining method", _checked, BUILTIN)
METHODS = _REGISTRY.names  # a live view for argparse choices: the built-ins and any registered since
unregister_method = _REGISTRY.unregister  # for tests that register a toy method


def register_method(name: str):
    """Class decorator: make ``name`` a pretraining method (``--method name``)."""
    return _REGISTRY.register(name)


def available() -> list[str]:
    """Every method name: the built-in ones and any registered since."""
    return list(METHODS)


def get(name: str) -> type[Method]:
    """The method class registered as ``name`` (a built-in one is imported on first use).

    Raises:
        ConfigError: no method is registered as ``name``.
    """
    return _REGISTRY.get(name)


def params(name: str, values: dict | None = None):
    """The method's ``Params`` with ``values`` (strings converted to each field's type) on its defaults.

    Raises:
        ConfigError: an unknown method, parameter name, or a value the method refuses.
    """
    cls = get(name)
    try:
        return override(cls.Params(), dict(values or {}))
    except ConfigError as e:
        raise ConfigError(f"method_params of {name}: {e}") from None


def create(name: str, encoder: nn.Module, cfg=None) -> Method:
    """The method ``name`` around ``encoder``; ``cfg`` is a ``method_params`` dict or its ``Params``."""
    cls = get(name)
    return cls(encoder, cfg if isinstance(cfg, cls.Params) else params(name, cfg))

