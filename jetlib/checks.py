"""The flags' validators: a flag's text checked by the same schemas as every config (:mod:`jetlib.schemas`).

A flag (``jetlib`` and ``pipelines.demo``) is read by these functions: each returns the converted
value or raises :class:`~jetlib.errors.ConfigError` with one line naming the setting, what was
expected and what was given. Whether a value fits is decided by the schema
(:func:`jetlib.schemas.whole`, :func:`jetlib.schemas.real`: no bool, no nan or inf, the bounds);
the line keeps the flags' short wording. The CLI turns it into argparse's ``argument --flag: ...``
line (:func:`argtype`).

Example:
    >>> whole("3", minimum=1), number("0.5", "lr", low=0, low_open=True)
    (3, 0.5)
"""

from __future__ import annotations

import argparse
import math

from jetlib import schemas
from jetlib.errors import ConfigError


def _fail(name: str, text: str):
    raise ConfigError(f"{name}: {text}" if name else text)


def number(value, name: str = "", *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
           high_open: bool = False) -> float:
    """``value`` (a number or its text) as a float in the interval from ``low`` to ``high``.

    ``low_open``/``high_open`` leave that end out; nan and the infinities are never in range.

    Raises:
        ConfigError: not a number (a bool is not one) or outside the interval.
    """
    bounds = {"gt" if low_open else "ge": None if low == -math.inf else low,
              "lt" if high_open else "le": None if high == math.inf else high}
    try:
        return float(schemas.parse(schemas.real(**bounds), value))
    except ConfigError:
        pass
    try:
        schemas.parse(schemas.real(), value)
    except ConfigError:
        if not _is_number_text(value):
            _fail(name, f"expected a number, got {value!r}")
    _fail(name, f"must be {_interval(low, high, low_open, high_open)}, got {value}")


def _is_number_text(value) -> bool:
    """nan and inf are numbers that are out of every range, not text that is no number."""
    try:
        return not isinstance(value, bool) and isinstance(float(value), float)
    except (TypeError, ValueError):
        return False


def _interval(low, high, low_open, high_open) -> str:
    if high == math.inf:  # the default: no upper bound but finiteness
        return "a positive number" if (low, low_open) == (0, True) else f"at least {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def whole(value, name: str = "", *, minimum: int | None = None) -> int:
    """``value`` as an int: an int, a float with no fraction (JSON's 2.0) or the text of an int.

    Raises:
        ConfigError: not a whole number (a bool, ``"2.5"``, 0.5) or below ``minimum``.
    """
    try:
        n = schemas.parse(schemas.whole(), value.strip() if isinstance(value, str) else value)
    except ConfigError:
        _fail(name, f"expected a whole number, got {value!r}")
    try:
        return schemas.parse(schemas.whole(ge=minimum), n)
    except ConfigError:
        _fail(name, f"must be at least {minimum}, got {n}")


def fraction(value, name: str = "") -> float:
    """A label fraction: a number in (0, 1]."""
    return number(value, name, low=0, high=1, low_open=True)


def fractions(text: str, name: str = "") -> tuple[float, ...]:
    """``"0.1,0.01,0.1"`` -> ``(0.01, 0.1)``: comma-separated label fractions, sorted, each once."""
    parts = [v for v in str(text).split(",") if v.strip()]
    try:
        values = tuple(fraction(v) for v in parts)
    except ConfigError:
        values = ()
    if not values:
        _fail(name, f"fractions must be in (0, 1], comma-separated, got {text!r}")
    return tuple(sorted(set(values)))


def wholes(text: str, name: str = "") -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: comma-separated whole numbers, in the order given."""
    try:
        return [whole(v.strip()) for v in str(text).split(",") if v.strip()]
    except ConfigError:
        _fail(name, f"expected comma-separated whole numbers, got {text!r}")


def names(text: str, known, name: str = "") -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``: a non-empty list of names, each one of ``known``."""
    chosen = [m.strip() for m in str(text).split(",") if m.strip()]
    bad = [m for m in chosen if m not in known]
    if bad or not chosen:
        _fail(name, f"unknown {', '.join(map(repr, bad)) or '(none given)'}; choose from {', '.join(known)}")
    return chosen


def argtype(check, **options):
    """An argparse ``type=`` from a validator: its ConfigError becomes argparse's one-line flag error.

    Example:
        >>> argtype(whole, minimum=1)("4")
        4
    """
    def convert(text: str):
        try:
            return check(text, **options)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(check, "__name__", "value")  # argparse names the type in "invalid X value"
    return convert
