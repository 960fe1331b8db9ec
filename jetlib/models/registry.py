"""The registry of networks: ``register_model``, ``create``, ``from_blob`` (re-exported by jetlib.models)."""

from __future__ import annotations

from jetlib.errors import DataError, JetlibError
from jetlib.models.base import Encoder
from jetlib.registry import Registry

_NETWORKS = Registry("network")
ARCHS = _NETWORKS.names  # a live view: argparse choices and messages see every registered network
unregister_model = _NETWORKS.unregister


def register_model(name: str):
    """Register ``factory(**cfg) -> Encoder`` (a function or an :class:`Encoder` subclass) as ``name``.

    Every factory accepts ``in_channels``: fine-tuning builds the network for the dataset's channels.
    """
    return _NETWORKS.register(name)


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
