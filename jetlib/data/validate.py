"""A manifest read back from the store is checked whole before anything uses it.

The store is shared: whoever can write the bucket can write a ``manifest.json``. A
manifest that is JSON but not a manifest (a list, no ``splits``, ``row_group_rows`` 0,
row counts that do not add up), or one whose values would choose a path (a shard key
that is absolute or climbs with ``..``, a "sha256" that is not one, while the loader
names cache files after it), is refused here with one :class:`DataError` line naming
the manifest and the field, before the loader, a training step or ``jetlib inspect``
reads a single shard.

What is checked (the fields every reader relies on):

* ``format``, ``id`` (12 hex digits), ``name``, ``labelled`` (a boolean);
* ``image``: channels 1..16, height and width 1..4096, one channel name per channel;
* ``config``: ``1 <= row_group_rows <= shard_rows``;
* ``splits``: ``train``, ``val`` and ``test``, each with ``rows`` equal to the sum of its
  shards' rows; every shard a key ``<split>/t<tier>-<NNNNN>.parquet`` (no other key is
  ever written), a sha256 of 64 lowercase hex digits, ``1 <= rows <= shard_rows``,
  ``bytes >= 0``, a tier below the number of label fractions; no key twice;
* the splits add up to ``source.n_jets``;
* ``subsets``: ascending fractions in (0, 1] with tier counts the splits can hold;
* ``stats.channels``: finite ``mean``, ``std >= 0`` and ``max`` per channel, and finite
  ``m0``/``pt`` statistics when labelled.
"""

from __future__ import annotations

import math
import re

from jetlib.data.keys import confine, is_sha256
from jetlib.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
SHARD_NAME = re.compile(r"t\d{1,3}-\d{5,9}\.parquet")
DATASET_ID = re.compile(r"[0-9a-f]{12}")
MAX_CHANNELS, MAX_SIDE = 16, 4096


class _Checker:
    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, problem: str):
        raise DataError(f"{self.where}: {field} {problem} (not a manifest jetlib wrote: refused; re-ingest "
                        f"the dataset)")

    def get(self, doc: dict, key: str, field: str, kind: type | tuple):
        if not isinstance(doc, dict) or key not in doc:
            self.fail(field, "is missing")
        value = doc[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            self.fail(field, f"is {_kind(value)}, expected a whole number")
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                self.fail(field, f"is {_kind(value)}, expected a finite number")
        elif not isinstance(value, kind):
            self.fail(field, f"is {_kind(value)}, expected {_name(kind)}")
        return value

    def count(self, doc: dict, key: str, field: str, low: int = 0, high: int | None = None) -> int:
        value = self.get(doc, key, field, int)
        if value < low or (high is not None and value > high):
            self.fail(field, f"is {value}, expected {low}..{high}" if high is not None else
                      f"is {value}, expected at least {low}")
        return value

    def numbers(self, doc: dict, key: str, field: str, n: int, minimum: float | None = None) -> list:
        values = self.get(doc, key, field, list)
        if len(values) != n:
            self.fail(field, f"has {len(values)} values, expected {n} (one per channel)")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                self.fail(f"{field}[{i}]", f"is {_kind(v)}, expected a finite number")
            if minimum is not None and v < minimum:
                self.fail(f"{field}[{i}]", f"is {v}, below {minimum:g}")
        return values


def _kind(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({dict: "an object", list: "a list", str: "a string", bool: "true or false"}.get(k, k.__name__)
                       for k in kinds)


def check_manifest(m, where: str) -> dict:
    """``m`` if it is a whole, consistent manifest; else one :class:`DataError` naming ``where`` and the field."""
    c = _Checker(where)
    if not isinstance(m, dict):
        c.fail("the document", f"is {_kind(m)}, expected an object")
    ds_id = c.get(m, "id", "id", str)
    if not DATASET_ID.fullmatch(ds_id):
        c.fail("id", f"is {ds_id[:40]!r}, expected 12 hex digits")
    c.get(m, "name", "name", str)
    labelled = c.get(m, "labelled", "labelled", bool)
    image = c.get(m, "image", "image", dict)
    channels = c.count(image, "channels", "image.channels", 1, MAX_CHANNELS)
    c.count(image, "height", "image.height", 1, MAX_SIDE)
    c.count(image, "width", "image.width", 1, MAX_SIDE)
    names = c.get(image, "channel_names", "image.channel_names", list)
    if len(names) != channels or not all(isinstance(n, str) for n in names):
        c.fail("image.channel_names", f"is not {channels} names")
    cfg = c.get(m, "config", "config", dict)
    shard_rows = c.count(cfg, "shard_rows", "config.shard_rows", 1)
    c.count(cfg, "row_group_rows", "config.row_group_rows", 1, shard_rows)
    subsets = c.get(m, "subsets", "subsets", list)
    if not subsets:
        c.fail("subsets", "is empty")
    previous = 0.0
    for i, s in enumerate(subsets):
        f = c.get(s, "fraction", f"subsets[{i}].fraction", float)
        if not previous < f <= 1:
            c.fail(f"subsets[{i}].fraction", f"is {f}, expected ascending fractions in (0, 1]")
        previous = f
        c.count(s, "tiers", f"subsets[{i}].tiers", 1, len(subsets))
        c.count(s, "rows", f"subsets[{i}].rows")
        if "val_tiers" in s:
            c.count(s, "val_tiers", f"subsets[{i}].val_tiers", 1, len(subsets))
    splits = c.get(m, "splits", "splits", dict)
    total, seen = 0, set()
    for split in SPLIT_NAMES:
        rec = c.get(splits, split, f"splits.{split}", dict)
        shards = c.get(rec, "shards", f"splits.{split}.shards", list)
        rows = 0
        for i, sh in enumerate(shards):
            field = f"splits.{split}.shards[{i}]"
            key = c.get(sh, "key", f"{field}.key", str)
            confine(key, f"{where}: {field}", split, SHARD_NAME)
            if key in seen:
                c.fail(f"{field}.key", f"repeats {key!r}")
            seen.add(key)
            if not is_sha256(sh.get("sha256")):
                c.fail(f"{field}.sha256", f"is {_kind(sh.get('sha256'))}, expected 64 lowercase hex digits")
            rows += c.count(sh, "rows", f"{field}.rows", 1, shard_rows)
            c.count(sh, "bytes", f"{field}.bytes")
            c.count(sh, "tier", f"{field}.tier", 0, len(subsets) - 1)
        declared = c.count(rec, "rows", f"splits.{split}.rows")
        if declared != rows:
            c.fail(f"splits.{split}.rows", f"is {declared:,} but its shards hold {rows:,}")
        total += rows
    source = c.get(m, "source", "source", dict)
    n_jets = c.count(source, "n_jets", "source.n_jets", 1)
    if n_jets != total:
        c.fail("source.n_jets", f"is {n_jets:,} but the splits hold {total:,}")
    if not splits["train"]["shards"]:
        c.fail("splits.train.shards", "is empty")
    stats = c.get(m, "stats", "stats", dict)
    ch = c.get(stats, "channels", "stats.channels", dict)
    c.numbers(ch, "mean", "stats.channels.mean", channels)
    c.numbers(ch, "std", "stats.channels.std", channels, 0.0)
    c.numbers(ch, "max", "stats.channels.max", channels)
    if labelled:
        for key in ("m0", "pt"):
            s = c.get(stats, key, f"stats.{key}", dict)
            for part in ("mean", "std", "min", "max"):
                c.get(s, part, f"stats.{key}.{part}", float)
    return m
