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

and its name in :data:`_BUILTIN` below (so ``--method`` lists it without an import). Its
hyperparameters reach it from the config's ``method_params`` dict (``--set
method_params.proj_dim=64``), checked against ``Params``: an unknown name or a bad value is
one :class:`~jetlib.errors.ConfigError` line.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING

from jetlib.config import override
from jetlib.errors import ConfigError
from jetlib.registry import Registry

DEFAULT_METHOD = "simclr"  # the default, and what a record written before methods were a choice means

# the built-in methods' modules, imported on first use; a test or plugin registers its own directly
_BUILTIN = {
    "simclr": "jetlib.methods.simclr",
    "vicreg": "jetlib.methods.vicreg",
    "barlowtwins": "jetlib.methods.barlowtwins",
    "byol": "jetlib.methods.byol",
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


_REGISTRY = Registry("pretraining method", _checked)
unregister_method = _REGISTRY.unregister  # for tests that register a toy method


def register_method(name: str):
    """Class decorator: make ``name`` a pretraining method (``--method name``)."""
    return _REGISTRY.register(name)


def available() -> list[str]:
    """Every method name: the built-in ones and any registered since."""
    return sorted(set(_BUILTIN) | set(_REGISTRY.names))


def get(name: str) -> type[Method]:
    """The method class registered as ``name`` (a built-in one is imported on first use)."""
    if isinstance(name, str) and name not in _REGISTRY.names and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY.names:
        raise ConfigError(f"unknown pretraining method {str(name)[:40]!r}: choose one of {', '.join(available())}")
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


def __getattr__(attr: str):
    """``METHODS``: every method name, for argparse choices (computed on use: tests may register more);
    ``Method``: the base class, from :mod:`jetlib.methods.base` (imported on use, so that the CLI's
    parser, which lists the names, does not import torch)."""
    if attr == "METHODS":
        return tuple(available())
    if attr == "Method":
        from jetlib.methods.base import Method

        return Method
    raise AttributeError(attr)
