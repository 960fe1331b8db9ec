"""Declared schemas: every value that comes in passes one, and a refusal is one line.

The step configs stay frozen, typed dataclasses (a comment per field); their field types carry
their bounds as ``typing.Annotated`` constraints named here (:data:`Seed`, :data:`LearningRate`,
:data:`Dropout`, ...), and :func:`check` validates an instance against them with pydantic:
types, bounds, finiteness (no nan, no inf anywhere), string lengths. Text from a flag or
``--set`` is converted by the same schema ("3" to 3, "0.1" to 0.1, "8,8,16" to a tuple), so
there is no second converter. A bare ``int`` or ``float`` field (a plugin's ``Params``) gets the
same treatment: a bool is not a number and nan is not a float.

Records read back (:mod:`jetlib.schemas.records`), the pipeline's parameters
(:func:`jetlib.study.plan`) and the environment (:mod:`jetlib.schemas.env`) are checked by
:func:`parse` against pydantic models. Every refusal is one :class:`~jetlib.errors.ConfigError`
(or the error class the caller names) line: where, the field, what would be accepted, the value.

Example:
    >>> parse(tuple[Seed, ...], ["0", 1], "seeds")
    (0, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from jetlib.errors import ConfigError

MAX_SEED = 2**31 - 1  # numpy's and torch's generators both take it; a per-rank offset stays below 2**32
MAX_WIDTH = 8192  # channels of one layer: a 3x3 conv at 8192x8192 already holds 600M weights
MAX_STEPS = 10**7  # epochs, patience, steps: more than any run of this study could use
MAX_BATCH = 2**20
MAX_DEPTH = 64  # blocks or stages a network config may list
_TEXT = 4096  # the longest string any config or record field may hold (a URI)

# A name that becomes part of a folder or a file name (a method, a preset, a task): nothing that
# leaves its folder, needs quoting, or reads as a path.
NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")


def _not_bool(value):
    if isinstance(value, bool):  # True is an int to Python, never a count or a rate to a physicist
        raise ValueError("a number is needed, not a boolean")
    return value


_DECIMAL = re.compile(r"\s*[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)\s*")


def _int_text(value):
    if isinstance(value, str) and _DECIMAL.fullmatch(value):  # "2.0", "1e3": text that is not written as a count
        raise ValueError("must be a valid integer, written without a decimal point or exponent")
    return _not_bool(value)


def _name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise ValueError("must be a name of lowercase letters, digits and '_' (at most 64), starting with a "
                         "letter or digit")
    return value


def whole(ge: int | None = None, le: int | None = None):
    """A whole number from ``ge`` to ``le`` (a bool, 2.5 or "2.5" is refused)."""
    return Annotated[int, BeforeValidator(_int_text), Field(ge=ge, le=le)]


def real(*, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None):
    """A finite number in the given bounds (a bool, nan and the infinities are refused)."""
    return Annotated[float, BeforeValidator(_not_bool), Field(gt=gt, ge=ge, lt=lt, le=le, allow_inf_nan=False)]


def one_of(choices, what: str):
    """A string among ``choices`` (a collection, or a function returning one: read when a value is
    checked, since registries grow after import). Define it once at module level: an annotation
    that calls a function is evaluated where the module's names are not all visible."""
    def check(value: str) -> str:
        known = tuple(choices() if callable(choices) else choices)
        if value not in known:
            raise ValueError(f"must be one of {', '.join(known)} ({what})")
        return value

    return Annotated[str, AfterValidator(check)]


# --- the bounds every config shares -----------------------------------------------------------
Seed = whole(0, MAX_SEED)
Count = whole(1, MAX_STEPS)  # epochs, patience, steps, an interval
NonNegCount = whole(0, MAX_STEPS)  # the same where 0 means "off" or "all"
BatchSize = whole(1, MAX_BATCH)
Width = whole(1, MAX_WIDTH)
Stride = whole(1, 8)
Channels = whole(1, 1024)
Groups = whole(1, MAX_WIDTH)
Widths = Annotated[tuple[Width, ...], Field(min_length=1, max_length=MAX_DEPTH)]
Strides = Annotated[tuple[Stride, ...], Field(min_length=1, max_length=MAX_DEPTH)]
Depths = Annotated[tuple[whole(1, 64), ...], Field(min_length=1, max_length=MAX_DEPTH)]
LearningRate = real(gt=0, le=10)  # no optimiser of this study converges above 10; 1e308 is a typo
WeightDecay = real(ge=0, le=10)
Dropout = real(ge=0, lt=1)  # 1 drops everything
Fraction = real(gt=0, le=1)  # a label fraction
Factor = real(gt=0, lt=1)  # a multiplicative decay: 1 is no decay, above 1 grows
Momentum = real(ge=0, le=1)
Positive = real(gt=0, le=1e6)  # a positive scale (a temperature, a gradient-norm bound, a loss weight)
NonNegative = real(ge=0, le=1e6)  # the same where 0 means "off" or "default"
Name = Annotated[str, AfterValidator(_name)]
Text = Annotated[str, Field(max_length=_TEXT)]

_CONFIG = ConfigDict(allow_inf_nan=False, str_max_length=_TEXT, arbitrary_types_allowed=True)


def _strict(hint):
    """``hint`` with bare int and float made to refuse bools (and floats nan/inf), recursively."""
    if hint is int:
        return whole()
    if hint is float:
        return real()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and args:
        return tuple[tuple(_strict(a) if a is not Ellipsis else a for a in args)]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_strict(a) for a in args)]  # noqa: UP007 (built from a tuple)
    return hint


@functools.cache
def _fields(cls) -> dict[str, object]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: _strict(hints[f.name]) for f in dataclasses.fields(cls) if f.init}


@functools.cache
def _adapter(cls) -> TypeAdapter:
    spec = TypedDict(f"{cls.__name__}Fields", _fields(cls))  # a TypedDict: any field name is allowed
    spec.__pydantic_config__ = _CONFIG
    return TypeAdapter(spec)


def hints(cls) -> dict[str, object]:
    """Each init field of dataclass ``cls`` and the type its values are checked against."""
    return dict(_fields(cls))


def message(e: ValidationError, where: str = "") -> str:
    """The first error of ``e`` as one line: ``where field: what would be accepted, got value``."""
    err = e.errors()[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    msg = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    msg = "is missing" if err["type"] == "missing" else msg
    value = repr(err.get("input"))
    # a missing field has no value; a check across fields (an empty loc) names its values itself
    shown = err["type"] != "missing" and err["loc"]
    got = f", got {value[:60]}{'...' if len(value) > 60 else ''}" if shown else ""
    glued = loc.startswith("[") or where.endswith(".")  # "seeds[0]", "model.widths"
    head = f"{where}{loc}" if glued else " ".join(p for p in (where, loc) if p)
    return " ".join(f"{head}: {msg}{got}".split()) if head else " ".join(f"{msg}{got}".split())


def validate_fields(cls, values: dict, where: str = "") -> dict:
    """``values`` (every init field of dataclass ``cls``) validated and converted by the fields' types.

    Raises:
        ConfigError: one line naming the first field that does not fit, what fits, and its value.
    """
    try:
        return _adapter(cls).validate_python(values)
    except ValidationError as e:
        raise ConfigError(message(e, where)) from None


def check(obj, where: str = "") -> None:
    """Validate every init field of dataclass instance ``obj`` against its declared type, in place.

    Converted values (``"3"`` for an int field, a list for a tuple) are stored back, so a config
    holds what its annotations say whatever built it. Call it first in ``__post_init__``.

    Raises:
        ConfigError: one line naming the first field that does not fit, what fits, and its value.
    """
    valid = validate_fields(type(obj), {n: getattr(obj, n) for n in _fields(type(obj))}, where)
    for n, value in valid.items():
        object.__setattr__(obj, n, value)  # frozen: the one write, before anyone reads it


@functools.cache
def _type_adapter(schema) -> TypeAdapter:
    # a class (a pydantic model, a TypedDict) carries its own config; a bare or Annotated type takes jetlib's
    return TypeAdapter(schema, config=None if isinstance(schema, type) else _CONFIG)


def parse(schema, value, where: str = "", error: type[Exception] = ConfigError):
    """``value`` validated against ``schema`` (a type, an ``Annotated`` type or a pydantic model).

    Raises:
        error: one line (:func:`message`) naming ``where`` and the first field that does not fit.
    """
    try:
        return _type_adapter(schema).validate_python(value)
    except ValidationError as e:
        raise error(message(e, where)) from None
