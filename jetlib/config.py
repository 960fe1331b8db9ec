"""Named presets and command-line overrides for the frozen config dataclasses of each step.

A preset is a dict of field values applied to a step's defaults (``tiny`` for
tests, ``cpu`` for a laptop, ``gpu`` for the full study); overrides from flags
or ``--set field=value`` (``--set model.widths=8,8,16``) are applied on top and
checked, text included, by the field's declared schema (:func:`jetlib.schemas.check`).
The resolved config is what every checkpoint and metrics file records.
"""

from __future__ import annotations

import dataclasses
import types
import typing

from jetlib.errors import ConfigError


def _text(text: str, kind):
    """What a flag's text stands for before the schema converts it: ``none`` for an optional field,
    a comma-separated list for a tuple; anything else goes to the schema as given."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Annotated:
        return _text(text, args[0])
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
        if text.lower() in ("none", "null", ""):
            return None
        return _text(text, next(a for a in args if a is not type(None)))
    if typing.get_origin(kind) is tuple:
        return tuple(t.strip() for t in text.split(",") if t.strip())
    return text


def override(cfg, values: dict[str, object], prefix: str = ""):
    """A copy of dataclass ``cfg`` with ``values`` (dotted keys reach nested configs), checked by its schema.

    The values are validated (and text converted) by the fields' declared types before the
    dataclass sees them, so its own ``__post_init__`` checks compare numbers, never text.
    """
    from jetlib import schemas

    hints = schemas.hints(type(cfg))
    changes, nested = {}, {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if head not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(cfg))
            raise ConfigError(f"unknown setting {prefix + key[:80]!r} (known: {known})")
        if rest and not dataclasses.is_dataclass(getattr(cfg, head)):
            raise ConfigError(f"{prefix + key[:80]}: {head} has no fields of its own; set it as {head}=VALUE")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            changes[head] = _text(value, hints[head]) if isinstance(value, str) else value
    for head, sub in nested.items():
        base = changes.get(head, getattr(cfg, head))
        if not dataclasses.is_dataclass(base):
            raise ConfigError(f"{prefix}{head}: set it whole or field by field ({head}.NAME=VALUE), not both")
        changes[head] = override(base, sub, f"{prefix}{head}.")
    valid = schemas.validate_fields(type(cfg), {n: changes.get(n, getattr(cfg, n)) for n in hints}, prefix)
    try:
        return dataclasses.replace(cfg, **{n: valid[n] for n in changes})
    except (TypeError, ValueError) as e:
        raise ConfigError(" ".join(str(e).split())) from None


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["a=1", "model.widths=4,8"]`` -> ``{"a": "1", "model.widths": "4,8"}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects field=value, got {item[:80]!r}")
        out[key.strip()] = value.strip()
    return out


def resolve(default, presets: dict[str, dict], preset: str, values: dict[str, object]):
    """Defaults, then the named preset, then explicit values (flags and --set)."""
    if preset not in presets:
        raise ConfigError(f"unknown preset {str(preset)[:40]!r}: choose one of {', '.join(presets)}")
    return override(override(default, {"preset": preset, **presets[preset]}), values)


def resolve_preset(name: str) -> str:
    """``auto`` becomes ``gpu`` where CUDA is visible, else ``cpu``; any other name is returned as given.

    The one place ``auto`` is decided (the CLI and the pipeline steps call it). Imports torch only for ``auto``.
    """
    if name != "auto":
        return name
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"
