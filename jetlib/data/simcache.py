"""Simulated files kept by their settings, so that a second ``make demo`` skips Pythia.

The cache is ``simulated/`` in ``$JETLIB_CACHE`` (default ``~/.cache/jetlib``, which also holds the
loader's S3 shards and compiled kernels): ``simulated/<key>.h5`` and ``simulated/<key>.json``. The
key is the sha256 of the full :class:`~jetlib.data.simulate.SimConfig` (detector included) and the
generator and jetlib versions, so a changed setting or a new version simulates anew. The JSON holds
the file's sha256 and the simulation's summary; a file whose bytes no longer match it is dropped and
simulated again. Both are written to a temporary name and renamed, the JSON last, so a killed run
leaves no entry behind.

The cache only saves time: a folder that cannot be written is skipped with a warning, never a
failure. ``$JETLIB_CACHE`` naming something that is not a folder is a bad setting (one line).
``simulate(..., cache=False)`` neither reads nor writes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from jetlib.errors import ConfigError

log = logging.getLogger(__name__)
ENV = "JETLIB_CACHE"


def cache_dir() -> Path:
    """The cache folder from ``$JETLIB_CACHE`` (default ``~/.cache/jetlib``)."""
    value = os.environ.get(ENV, "")
    if "\x00" in value:
        raise ConfigError(f"{ENV} is not a usable path: {value!r}")
    path = Path(value).expanduser() if value.strip() else Path.home() / ".cache" / "jetlib"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{ENV}={path} is not a folder")
    return path


def key(config: dict, versions: dict) -> str:
    """sha256 of the settings and versions (canonical JSON): equal keys, equal files."""
    text = json.dumps({"config": config, "versions": versions}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(k: str, out: Path) -> dict | None:
    """Copy the cached file of key ``k`` to ``out`` (atomically) and return its summary, or None on a miss."""
    root = cache_dir()
    h5, meta = root / "simulated" / f"{k}.h5", root / "simulated" / f"{k}.json"
    try:
        record = json.loads(meta.read_text())
        partial = out.with_name(out.name + ".partial")
        shutil.copyfile(h5, partial)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or _sha256(partial) != record.get("sha256"):
        partial.unlink(missing_ok=True)
        log.warning("cached simulation %s does not match its record: simulating again", h5)
        for p in (meta, h5):
            p.unlink(missing_ok=True)
        return None
    os.replace(partial, out)
    return record.get("summary", {})


def store(k: str, path: Path, summary: dict) -> None:
    """Keep a copy of ``path`` under key ``k``; a folder that cannot be written is skipped."""
    root = cache_dir()
    folder = root / "simulated"
    h5, meta = folder / f"{k}.h5", folder / f"{k}.json"
    tmp_h5, tmp_meta = (folder / f".{k}.{os.getpid()}{s}" for s in (".h5", ".json"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, tmp_h5)
        tmp_meta.write_text(json.dumps({"sha256": _sha256(tmp_h5), "summary": summary}))
        os.replace(tmp_h5, h5)
        os.replace(tmp_meta, meta)  # last: an entry exists only once its file is complete
    except OSError as e:
        log.warning("simulation not cached (%s: %s); set %s to a writable folder", folder, e, ENV)
    finally:
        for p in (tmp_h5, tmp_meta):
            p.unlink(missing_ok=True)
