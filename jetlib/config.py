"""Named presets and command-line overrides for the frozen config dataclasses of each step.

A preset is a dict of field values applied to a step's defaults (``tiny`` for
tests, ``cpu`` for a laptop, ``gpu`` for the full study); overrides from flags
or ``--set field=value`` (``--set model.widths=8,8,16``) are applied on top,
converted to each field's declared type. The resolved config is what every
checkpoint and metrics file records.
"""

from __future__ import annotations

import dataclasses
import types
import typing

from jetlib.errors import ConfigError


def _convert(text: str, kind, name: str):
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):  # X | None
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        return _convert(text, args[0], name)
    if origin is tuple:
        inner = typing.get_args(kind)[0]
        return tuple(_convert(t.strip(), inner, name) for t in text.split(",") if t.strip())
    try:
        if kind is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            return text.lower() in ("1", "true", "yes", "on")
        return kind(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot read {text!r} as {getattr(kind, '__name__', kind)}") from None


def override(cfg, values: dict[str, object]):
    """A copy of dataclass ``cfg`` with ``values`` (strings are converted; dotted keys reach nested configs)."""
    hints = typing.get_type_hints(type(cfg))
    changes, nested = {}, {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if head not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(cfg))
            raise ConfigError(f"unknown setting {key!r} (known: {known})")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            changes[head] = _convert(value, hints[head], key) if isinstance(value, str) else value
    for head, sub in nested.items():
        changes[head] = override(changes.get(head, getattr(cfg, head)), sub)
    try:
        return dataclasses.replace(cfg, **changes)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["a=1", "model.widths=4,8"]`` -> ``{"a": "1", "model.widths": "4,8"}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects field=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def resolve(default, presets: dict[str, dict], preset: str, values: dict[str, object]):
    """Defaults, then the named preset, then explicit values (flags and --set)."""
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(presets)}")
    return override(override(default, {"preset": preset, **presets[preset]}), values)


def resolve_preset(name: str) -> str:
    """``auto`` becomes ``gpu`` where CUDA is visible, else ``cpu``; any other name is returned as given.

    The one place ``auto`` is decided (the CLI and the pipeline steps call it). Imports torch only for ``auto``.
    """
    if name != "auto":
        return name
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"
