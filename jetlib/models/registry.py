"""The registry of networks: ``register_model``, ``create``, ``from_blob`` (re-exported by jetlib.models).

The built-in networks are named in :data:`BUILTIN` (name -> the module that registers it), imported
the first time the name is asked for, as the tasks' and the methods' are: a step's ``--help``
lists them without building anything.
"""

from __future__ import annotations

from jetlib.errors import DataError, JetlibError
from jetlib.models.base import Encoder
from jetlib.registry import Registry

# the built-in networks: name -> the module that registers it (imported on first use)
BUILTIN = {
    "resnet": "jetlib.models.resnet",
    "vgg": "jetlib.models.vgg",
    "vit": "jetlib.models.vit",
}

_NETWORKS = Registry("network", builtin=BUILTIN)
ARCHS = _NETWORKS.names  # a live view: argparse choices and messages see every registered network
unregister_model = _NETWORKS.unregister
_VARIANTS: dict[str, dict] = {}  # arch -> preset name -> the factory's keyword arguments


def register_model(name: str, variants: dict | None = None):
    """Register ``factory(**cfg) -> Encoder`` (a function or an :class:`Encoder` subclass) as ``name``.

    Every factory accepts ``in_channels``: fine-tuning builds the network for the dataset's channels.
    ``variants`` maps a preset name (``tiny``, ``cpu``, ``gpu``) to the keyword arguments (a dict or a
    config dataclass with ``to_dict``) that size the network for that preset; a preset it does not
    name builds the factory's defaults.
    """
    def add(factory):
        _NETWORKS.register(name)(factory)
        _VARIANTS[name] = {k: v.to_dict() if hasattr(v, "to_dict") else dict(v) for k, v in (variants or {}).items()}
        return factory
    return add


def variant(arch: str, preset: str) -> dict:
    """The keyword arguments that size ``arch`` for ``preset`` (``{}``: its defaults).

    Raises:
        ConfigError: ``arch`` is not registered.
    """
    _NETWORKS.get(arch)  # a built-in registers its variants on import
    return dict(_VARIANTS.get(arch, {}).get(preset, {}))


def step_args(arch: str, preset: str, model) -> dict:
    """The keyword arguments a step (pretraining, fine-tuning from scratch) builds ``arch`` with.

    ResNet-15 is sized by the step config's typed ``model`` field (its preset's widths, then ``--set
    model.widths=...``, each value checked when the config is made); any other network by its
    registered :func:`variant` for the preset.
    """
    return model.to_dict() if arch == "resnet" else variant(arch, preset)


def available() -> tuple[str, ...]:
    return tuple(ARCHS)


def create(arch: str, **cfg) -> Encoder:
    """The network ``arch`` built with ``cfg``, with no head (``forward`` gives its features).

    Raises:
        ConfigError: ``arch`` is not registered.
    """
    net = _NETWORKS.get(arch)(**cfg)
    net.arch = arch
    net._create_args = dict(cfg)  # what Encoder.config() returns where a network has no config of its own
    return net


def arch_of(blob, what: str = "the model file") -> str:
    """The registered arch a saved blob records (``model.pt``, ``encoder.pt``), checked before anything is built.

    Raises:
        DataError: the blob is not a dict or records no registered arch (exit 2).
    """
    arch = blob.get("arch") if isinstance(blob, dict) else None
    if not isinstance(arch, str) or arch not in ARCHS:
        got = f"arch {arch[:40]!r}" if isinstance(arch, str) else "no arch"
        raise DataError(f"{what} records {got}, expected one of {', '.join(ARCHS)}")
    return arch


def _build(arch: str, blob: dict, config: dict) -> Encoder:
    net = create(arch, **config)
    if blob.get("task") is not None:
        net.reset_head(blob["task"], **(blob.get("head") or {}))
    return net


def check_weights(blob: dict, what: str = "the model file", config: dict | None = None) -> str:
    """The blob's arch, once the network its ``config`` (and ``task``/``head``) records is known to have
    exactly the parameter names and shapes of its ``state_dict``; nothing is allocated to find out.

    The network is built on PyTorch's ``meta`` device (shapes without storage), so a 60 KB file
    that records widths of 100,000 is refused in a millisecond instead of asking for 360 GB. A
    network that matches holds no more numbers than the weights already read.

    Raises:
        DataError: no registered arch, a config or head that does not build, or any name or shape
            that differs from the state dict's (the first one named).
    """
    import torch

    arch = arch_of(blob, what)
    state = blob.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{what} holds no state_dict of tensors")
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in _build(arch, blob, config or blob["config"]).state_dict().items()}
    except (KeyError, TypeError, ValueError, RuntimeError, JetlibError) as e:
        raise DataError(f"{what} does not describe a {arch} network jetlib can rebuild: {_first_line(e)}") from None
    got = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != got:
        name = next(k for k in [*shapes, *got] if shapes.get(k) != got.get(k))  # the network's order: the first
        raise DataError(f"{what}: its config implies {name} of shape {shapes.get(name, 'absent')} but its weights "
                        f"hold {got.get(name, 'none')}: refused before building the network")
    return arch


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


def from_blob(blob: dict, what: str = "the model file") -> Encoder:
    """The network a saved blob describes, its weights loaded: ``encoder.pt`` (features only) or
    ``model.pt`` (with the head of its ``task``). The one rebuild path of evaluation, the report and fine-tuning.

    The recorded config is checked against the weights before anything is allocated (:func:`check_weights`).

    Raises:
        DataError: the blob names no registered arch, or its config, head or weights do not build one.
    """
    arch = check_weights(blob, what)
    try:
        net = _build(arch, blob, blob["config"])
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, JetlibError) as e:
        raise DataError(f"{what} does not describe a {arch} network jetlib can rebuild: {_first_line(e)}") from None
    return net
