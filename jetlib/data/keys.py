"""The grammar of values read back from the store before they become a path.

The bucket is shared and source files come from elsewhere, so nothing read back
(a shard key in a manifest, an encoder key in ``run.json``, a checkpoint pointer, a
sha256 that names a cache file, a mode that names a result file) may choose where
jetlib reads, writes or deletes. Every such value passes one of these checks first:

``check_key``     a relative ``/``-separated key: no leading ``/``, no empty, ``.`` or ``..``
                  segment, no control character; it cannot leave the prefix it is resolved in
``confine``       ``check_key`` plus a required folder (``train/``) and file-name pattern
``is_sha256``     64 lowercase hex digits, the only form a sha256 is written in
"""

from __future__ import annotations

import re

from jetlib.errors import DataError

MAX_KEY = 1024  # S3's limit on an object name, in bytes
SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")  # a backslash is a separator on some clients: never in a key


def key_problem(key: object) -> str | None:
    """Why ``key`` is not a safe relative key, or None when it is."""
    if not isinstance(key, str):
        return f"is a {type(key).__name__}, not a string"
    if not key:
        return "is empty"
    if len(key.encode()) > MAX_KEY:
        return f"is longer than {MAX_KEY} bytes"
    if _CONTROL.search(key):
        return "holds a control character or a backslash"
    if key.startswith("/"):
        return "is absolute"
    segments = key.split("/")
    if ".." in segments:
        return "climbs out with '..'"
    if "." in segments or "" in segments:
        return "has an empty or '.' segment"
    return None


def check_key(key: object, where: str) -> str:
    """``key`` if it is a safe relative key, else a :class:`DataError` naming ``where`` it came from."""
    problem = key_problem(key)
    if problem:
        raise DataError(f"{where}: key {_show(key)} {problem}: refused (a key read back must stay inside "
                        f"its own prefix)")
    return key


def confine(key: object, where: str, folder: str = "", name: re.Pattern | None = None) -> str:
    """``check_key`` and, when given, a key directly below ``folder`` whose last segment matches ``name``."""
    check_key(key, where)
    if folder and not key.startswith(f"{folder}/"):
        raise DataError(f"{where}: key {_show(key)} is not in {folder}/: refused")
    if name is not None and not name.fullmatch(key[len(folder) + 1:] if folder else key):
        raise DataError(f"{where}: key {_show(key)} is not a name jetlib writes there: refused")
    return key


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and SHA256.fullmatch(value) is not None


def check_sha256(value: object, where: str) -> str:
    if not is_sha256(value):
        raise DataError(f"{where}: sha256 {_show(value)} is not 64 lowercase hex digits: refused")
    return value


def _show(value: object, limit: int = 80) -> str:
    """A value for an error line: repr, cut short (a hostile value may be long or multi-line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
