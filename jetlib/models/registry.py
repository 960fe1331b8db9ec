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


def from_blob(blob: dict, what: str = "the model file") -> Encoder:
    """The network a saved blob describes, its weights loaded: ``encoder.pt`` (features only) or
    ``model.pt`` (with the head of its ``task``). The one rebuild path of evaluation, the report and fine-tuning.

    Raises:
        DataError: the blob names no registered arch, or its config, head or weights do not build one.
    """
    arch = arch_of(blob, what)
    try:
        net = create(arch, **blob["config"])
        if blob.get("task") is not None:
            net.reset_head(blob["task"], **(blob.get("head") or {}))
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, JetlibError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise DataError(f"{what} does not describe a {arch} network jetlib can rebuild: {first}") from None
    return net
