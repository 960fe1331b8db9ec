"""The registry of networks: ``register_model``, ``create``, ``from_blob`` (re-exported by jetlib.models).

The built-in networks are named in :data:`BUILTIN` (name -> the module that registers it), imported
the first time the name is asked for, as the tasks' and the methods' are: a step's ``--help``
lists them without building anything.

Each network's keyword arguments are a frozen dataclass (:func:`config_class`), the steps'
``model`` field: :func:`step_model` sizes it for a preset and then by ``--set model.NAME=VALUE``,
refusing at once a name the network does not take or a value its schema refuses.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing

from jetlib.config import override
from jetlib.errors import ConfigError, DataError, JetlibError
from jetlib.models.base import Encoder
from jetlib.registry import Registry
from jetlib.schemas import check

# the built-in networks: name -> the module that registers it (imported on first use)
BUILTIN = {
    "resnet": "jetlib.models.resnet",
    "vgg": "jetlib.models.vgg",
    "vit": "jetlib.models.vit",
}

_NETWORKS = Registry("network", builtin=BUILTIN)
ARCHS = _NETWORKS.names  # a live view: argparse choices and messages see every registered network
_VARIANTS: dict[str, dict] = {}  # arch -> preset name -> the factory's keyword arguments
_CONFIGS: dict[str, type] = {}  # arch -> the dataclass of its keyword arguments (declared, or its signature's)


def register_model(name: str, variants: dict | None = None, config: type | None = None):
    """Register ``factory(**cfg) -> Encoder`` (a function or an :class:`Encoder` subclass) as ``name``.

    Every factory accepts ``in_channels``: fine-tuning builds the network for the dataset's channels.
    ``variants`` maps a preset name (``tiny``, ``cpu``, ``gpu``) to the keyword arguments (a dict or a
    config dataclass with ``to_dict``) that size the network for that preset; a preset it does not
    name builds the factory's defaults. ``config`` is the frozen dataclass of those keyword
    arguments whose field types are their schemas (:class:`~jetlib.models.resnet.ResNetConfig`);
    without one, the factory's own signature is read into one (:func:`config_class`), so a step's
    ``--set model.NAME=VALUE`` is checked against the network's arguments either way.
    """
    def add(factory):
        cls = config or _signature_config(name, factory)  # a factory it cannot read is refused unregistered
        _NETWORKS.register(name)(factory)
        _CONFIGS[name] = cls
        _VARIANTS[name] = {k: v.to_dict() if hasattr(v, "to_dict") else dict(v) for k, v in (variants or {}).items()}
        return factory
    return add


def unregister_model(name: str) -> None:
    """Remove ``name`` (tests register toy networks and take them away again)."""
    _NETWORKS.unregister(name)
    _CONFIGS.pop(name, None)
    _VARIANTS.pop(name, None)


def _signature_config(name: str, factory) -> type:
    """A frozen dataclass of ``factory``'s keyword arguments, each typed by its annotation, else by its
    default's type (a tuple default: a tuple of its first item's type), checked as a declared config is."""
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        hints = typing.get_type_hints(target)
    except (NameError, TypeError):  # an annotation that does not resolve: type by the defaults
        hints = {}
    specs = []
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise TypeError(f"{name}: every argument of a network's factory needs a default, {p.name!r} has none")
        default = tuple(p.default) if isinstance(p.default, list) else p.default
        kind = hints.get(p.name) or _type_of(default)
        specs.append((p.name, kind, dataclasses.field(default=default)))

    def post_init(self):
        check(self, "model.")

    return dataclasses.make_dataclass(f"{name}_args", specs, frozen=True, namespace={
        "__post_init__": post_init, "to_dict": dataclasses.asdict})


def _type_of(default):
    if default is None:
        return typing.Any
    if isinstance(default, tuple):
        return tuple[type(default[0]), ...] if default else tuple
    return type(default)


def config_class(arch: str) -> type:
    """The dataclass of ``arch``'s keyword arguments: what ``--set model.NAME=VALUE`` may name.

    Raises:
        ConfigError: ``arch`` is not registered.
    """
    _NETWORKS.get(arch)  # a built-in registers its config on import
    return _CONFIGS[arch]


def settable(arch: str) -> tuple[str, ...]:
    """The arguments of ``arch`` a step's ``model.NAME`` may set: all but ``in_channels`` (the dataset's)."""
    return tuple(f.name for f in dataclasses.fields(config_class(arch)) if f.name != "in_channels")


def variant(arch: str, preset: str) -> dict:
    """The keyword arguments that size ``arch`` for ``preset`` (``{}``: its defaults).

    Raises:
        ConfigError: ``arch`` is not registered.
    """
    _NETWORKS.get(arch)  # a built-in registers its variants on import
    return dict(_VARIANTS.get(arch, {}).get(preset, {}))


def model_config(arch: str, model):
    """``model`` as ``arch``'s config: an instance of :func:`config_class` as it is, a dict (a record read
    back) built into one, its names and values checked against the network's arguments.

    Raises:
        ConfigError: another network's config, or a name or value ``arch`` does not take.
    """
    cls = config_class(arch)
    if isinstance(model, cls):
        return model
    if not isinstance(model, dict):
        raise ConfigError(f"model: a {type(model).__name__} does not size the {arch} network (its arguments are a "
                          f"{cls.__name__}); name the network and its model.NAME values together")
    return _configure(arch, model, {})


def step_model(arch: str, preset: str, values: dict) -> tuple[object, dict]:
    """(the config that sizes ``arch`` in a step, the step's other values), from a step's ``values``
    (flags and ``--set``, as :func:`jetlib.config.resolve` takes them).

    The config is the network's defaults, then the ``preset``'s :func:`variant` (or ``values["model"]``,
    a config or dict given whole), then each ``model.NAME`` value (``--set model.depth=2``, text
    converted by the field's schema), every name and value checked against the network's own
    arguments here, before any step runs.

    Raises:
        ConfigError: one line naming the field, the network and its arguments: a name the network
            does not take (``in_channels`` included: the dataset's channels set it), or a value its
            schema refuses.
    """
    whole = values.get("model")
    sets = {k.removeprefix("model."): v for k, v in values.items() if k.startswith("model.")}
    rest = {k: v for k, v in values.items() if k != "model" and not k.startswith("model.")}
    if whole is None:
        base = variant(arch, preset)
    else:
        base = dataclasses.asdict(model_config(arch, whole)) if dataclasses.is_dataclass(whole) else dict(whole)
    for key in sets:
        if key.partition(".")[0] == "in_channels":
            raise ConfigError(f"model.{key[:80]}: the {arch} network takes the dataset's channel count, not a "
                              f"setting (its arguments: {', '.join(settable(arch))})")
    return _configure(arch, base, sets), rest


def _configure(arch: str, base: dict, sets: dict):
    """``arch``'s config built from ``base`` (every key an argument), then ``sets`` (text converted)."""
    cls, names = config_class(arch), settable(arch)
    for key in [*base, *sets]:
        name = key.partition(".")[0]
        if name not in names and not (name == "in_channels" and key in base):
            raise ConfigError(f"model.{key[:80]}: the {arch} network has no argument {name[:40]!r} "
                              f"(its arguments: {', '.join(names)})")
    try:
        return override(cls(**base), dict(sets), "model.")
    except ConfigError as e:
        raise ConfigError(f"{e} (the {arch} network's arguments: {', '.join(names)})") from None


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
