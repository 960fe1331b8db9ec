"""The dataset manifest, and a handle to a committed dataset in a store.

A dataset lives at ``<store>/datasets/<name>-<id>/``: shards under ``train/``,
``val/``, ``test/`` and ``manifest.json``, written last. A prefix without a
manifest is not a dataset (an ingest is running there, or was killed), and every
reader here refuses it. The manifest records, for each shard, its row count,
byte size and sha256; :meth:`Dataset.read_shard` verifies the hash, the size and the
row count on every read. A manifest is checked whole when it is opened
(:func:`~jetlib.data.validate.check_manifest`): one written by anyone but jetlib, or
whose keys or hashes would choose a path, is refused before any shard is read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from jetlib.data.store import NotFound, Store, open_store, sha256_bytes
from jetlib.data.validate import check_manifest
from jetlib.errors import ConfigError, DataError, StoreError

MANIFEST = "manifest.json"
FORMAT = "jetlib.dataset/1"
CLASS_NAMES = {0: "gluon", 1: "quark"}
VALIDATION = ("fraction", "full")  # which val jets a supervised run on a label fraction chooses its epoch with
log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """A committed dataset: its store and its manifest."""

    store: Store
    manifest: dict

    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def labelled(self) -> bool:
        return bool(self.manifest["labelled"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        im = self.manifest["image"]
        return im["channels"], im["height"], im["width"]

    @property
    def fractions(self) -> list[float]:
        return [s["fraction"] for s in self.manifest["subsets"]]

    def subset(self, fraction: float) -> dict:
        """The manifest record of the nested label-fraction subset ``fraction`` (tiers, class counts)."""
        for s in self.manifest["subsets"]:
            if abs(s["fraction"] - fraction) < 1e-9:
                return s
        have = ", ".join(f"{f:g}" for f in self.fractions)
        raise ConfigError(f"label fraction {fraction:g} is not a subset of {self.uri} (it has {have}; "
                          f"re-ingest with --fractions to add one)")

    def shards(self, split: str, fraction: float | None = None) -> list[dict]:
        """Shard records of ``split``; for train and val, ``fraction`` selects a nested subset (tiers 0..j).

        Datasets ingested before val was tiered have one val tier: every val fraction is then
        the whole split (:meth:`validation_fraction` says so before a run relies on it)."""
        if split not in self.manifest["splits"]:
            raise ConfigError(f"unknown split {split!r}: expected train, val or test")
        shards = self.manifest["splits"][split]["shards"]
        if fraction is None or fraction == 1.0:
            return list(shards)
        if split == "test":
            raise ConfigError("label fractions select subsets of the train and val splits only")
        sub = self.subset(fraction)
        tiers = sub["tiers"] if split == "train" else sub.get("val_tiers", len(self.fractions))
        return [s for s in shards if s["tier"] < tiers]

    def validation_fraction(self, fraction: float, validation: str) -> tuple[float | None, str]:
        """(val subset to load, what it is) for a run on the label fraction ``fraction``.

        ``validation="fraction"``: the val subset drawn with the same label budget
        (``"fraction"``); ``"full"``: the whole val split. A dataset ingested before val
        subsets existed falls back to the whole split, with a warning, and says ``"full"``."""
        if validation not in VALIDATION:
            raise ConfigError(f"validation must be one of {', '.join(VALIDATION)}, got {validation!r}")
        if validation == "full" or fraction == 1.0:  # at f = 1 the label budget's val subset is all of val
            return None, validation
        if "val_tiers" not in self.subset(fraction):
            log.warning("%s has no validation subsets (ingested by an older jetlib): validating on the whole "
                        "val split, %d labelled jets; re-ingest for an honest label budget", self.uri,
                        self.rows("val"))
            return None, "full"
        return fraction, "fraction"

    def rows(self, split: str, fraction: float | None = None) -> int:
        return sum(s["rows"] for s in self.shards(split, fraction))

    def read_shard(self, shard: dict) -> bytes:
        """The bytes of one shard, verified against the manifest's sha256, byte size and row count."""
        data = self.store.get_bytes(shard["key"])
        where = self.store.key_uri(shard["key"])
        if sha256_bytes(data) != shard["sha256"]:
            raise DataError(f"{where}: checksum mismatch (the shard changed or is corrupt; re-ingest the dataset)")
        check_shard(data, shard, where, self.manifest["config"]["row_group_rows"])
        return data

    def verify(self, bar=None) -> tuple[int, int]:
        """Read every shard and check it (``jetlib inspect --verify``); returns (shards, bytes).

        Raises:
            DataError: naming how many shards failed and the first of them.
        """
        failed, n, size = [], 0, 0
        for split in ("train", "val", "test"):
            for shard in self.manifest["splits"][split]["shards"]:
                try:
                    size += len(self.read_shard(shard))
                except (DataError, StoreError) as e:
                    failed.append(str(e))
                n += 1
                if bar is not None:
                    bar.update(1)
        if failed:
            raise DataError(f"{len(failed)} of {n} shards of {self.uri} failed verification; first: {failed[0]}")
        return n, size

    def channel_scale(self) -> np.ndarray:
        """Per-channel 1/std of train pixels (zeros included): the loader's default normalisation."""
        std = np.asarray(self.manifest["stats"]["channels"]["std"], dtype=np.float64)
        return (1.0 / np.where(std > 0, std, 1.0)).astype(np.float32)


def check_shard(data: bytes, shard: dict, where: str, row_group_rows: int) -> None:
    """The shard's bytes hold what the manifest says: its byte size, rows and row groups.

    A manifest whose row counts are inflated would otherwise send the loader to row groups
    the file does not have."""
    from jetlib.data.shards import parquet_file

    if len(data) != shard["bytes"]:
        raise DataError(f"{where}: {len(data):,} bytes, the manifest says {shard['bytes']:,}")
    try:
        meta = parquet_file(data).metadata
    except Exception as e:  # pyarrow raises its own ArrowInvalid for a file that is not Parquet
        raise DataError(f"{where}: not a readable Parquet shard ({type(e).__name__})") from None
    groups = -(-shard["rows"] // row_group_rows)
    if meta.num_rows != shard["rows"] or meta.num_row_groups != groups:
        raise DataError(f"{where}: holds {meta.num_rows:,} jets in {meta.num_row_groups} row groups, the "
                        f"manifest says {shard['rows']:,} in {groups}")


def open_dataset(uri: str) -> Dataset:
    """Open the committed dataset at ``uri`` or raise a one-line error."""
    store = open_store(uri)
    try:
        raw = store.get_bytes(MANIFEST)
    except NotFound:
        raise DataError(f"no dataset at {store.uri}: {MANIFEST} is missing (not a dataset, or its ingest "
                        f"did not finish)") from None
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"{store.key_uri(MANIFEST)} is not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{store.key_uri(MANIFEST)} is not text (not valid UTF-8)") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != FORMAT:
        got = repr(fmt) if isinstance(manifest, dict) else f"no format (it is a JSON {type(manifest).__name__})"
        raise DataError(f"{store.key_uri(MANIFEST)} has format {got[:60]}, expected {FORMAT!r}")
    return Dataset(store, check_manifest(manifest, store.key_uri(MANIFEST)))


def _counts(counts: dict) -> str:
    return " / ".join(f"{CLASS_NAMES.get(int(k), k)} {v:,}" for k, v in sorted(counts.items(), reverse=True))


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def format_manifest(ds: Dataset) -> str:
    """The manifest as a person wants to read it (``jetlib inspect``)."""
    try:
        return _format(ds)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        # the fields readers rely on were checked on open; these are the descriptive ones
        raise DataError(f"{ds.store.key_uri(MANIFEST)}: a descriptive field is missing or of the wrong type "
                        f"({type(e).__name__}: {str(e)[:80]}); --json shows the raw manifest") from None


def _format(ds: Dataset) -> str:
    m = ds.manifest
    src, im, st = m["source"], m["image"], m["stats"]
    created = datetime.fromisoformat(m["created"]).strftime("%Y-%m-%d %H:%M UTC")
    layout = f"layout '{src['layout']}', channel-{src['channel_axis']}, {src['dtype']}"
    if src.get("chunks"):
        layout += f", chunks {'x'.join(map(str, src['chunks']))}"
    if src.get("compression"):
        layout += f", {src['compression']}"
    splits = m["splits"]
    lines = [
        f"dataset   {m['name']}",
        f"uri       {ds.uri}",
        f"created   {created} by jetlib {m['jetlib_version']}",
        f"source    {src['path']} ({_mb(src['bytes'])}, sha256 {src['sha256'][:16]}...)",
        f"          {layout}",
        f"images    {im['channels']} x {im['height']} x {im['width']}: {', '.join(im['channel_names'])}"
        f" ({im['value_dtype']} values)",
        f"labels    {'y, m0, pt' if m['labelled'] else 'none (unlabelled: pretraining only)'}",
        f"jets      {src['n_jets']:,} = train {splits['train']['rows']:,} + val {splits['val']['rows']:,}"
        f" + test {splits['test']['rows']:,}  (split seed {m['config']['split']['seed']})",
    ]
    if m["labelled"]:
        for name in ("train", "val", "test"):
            lines.append(f"  {name:<7} {_counts(splits[name]['class_counts'])}")
    lines.append("subsets   " + "   ".join(
        f"{s['fraction']:.0%}: {s['rows']:,}" for s in m["subsets"]) + "   (nested, class-balanced)")
    if all("val_rows" in s for s in m["subsets"]):
        lines.append("  val     " + "   ".join(f"{s['fraction']:.0%}: {s['val_rows']:,}" for s in m["subsets"])
                     + "   (validation with the same label budget)")
    n_shards = sum(len(s["shards"]) for s in splits.values())
    b = m["bytes"]
    lines.append(f"storage   {n_shards} shards, {_mb(b['shards'])}; dense float32 would be "
                 f"{_mb(b['dense_float32'])} ({b['dense_float32'] / max(b['shards'], 1):.1f}x larger)")
    ch = st["channels"]
    lines.append("pixels    (train)   " + "".join(f"{h:>11}" for h in ("mean", "std", "max", "non-zero")))
    for i, name in enumerate(im["channel_names"]):
        lines.append(f"  {name:<17} {ch['mean'][i]:>11.4g}{ch['std'][i]:>11.4g}{ch['max'][i]:>11.4g}"
                     f"{ch['nonzero_fraction'][i]:>11.2%}")
    for key, label in (("m0", "jet mass"), ("pt", "jet pT")):
        if key in st:
            s = st[key]
            lines.append(f"{key:<9} (train)   mean {s['mean']:.1f} GeV, std {s['std']:.1f}, "
                         f"range {s['min']:.1f} to {s['max']:.1f} GeV  [{label}]")
    return "\n".join(lines)
