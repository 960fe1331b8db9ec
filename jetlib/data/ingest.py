"""``jetlib ingest``: validate an HDF5 file of jet images and commit it to the store as sparse shards.

The steps, in order, each before anything is written:

1. :func:`~jetlib.data.schema.inspect_source` checks keys, ranks, sizes, dtypes, lengths;
2. the store is probed for writing (an unreachable or read-only store fails here);
   the file's sha256 names the dataset ``datasets/<name>-<id>``, where ``id`` hashes
   the file and every setting that changes the output: re-ingesting the same file
   with the same settings finds the manifest and is a no-op that prints the same URI;
3. labels, masses and pTs are read and checked; every row is placed
   (:func:`~jetlib.data.splits.assign`);
4. **pass 1** streams the images in blocks (bounded memory), checks every pixel is
   finite and physical (:class:`_Quality`), encodes the non-zero pixels, accumulates
   train-only statistics and scatters rows towards their destination shard: an
   external shuffle that keeps at most ``memory_mb`` in RAM and spills the rest to
   local disk (``$JETLIB_TMPDIR``; a full disk is one line, exit 5; the spill folder
   of a killed ingest is removed by the next one on the same machine);
5. **pass 2** assembles each shard in its random order and uploads it. A shard
   already in the store with the same sha256 (from a killed run) is not uploaded
   again, so a re-run resumes;
6. ``manifest.json`` is written last: the commit.

Bad input stops the run in steps 1-4, before the first byte reaches the store.

What no physicist would want trained on is refused: a pixel above ``pixel_max``
(14 TeV, the collision energy, by default), a negative pixel in the quark/gluon layout
(Tracks, ECAL and HCAL are energies; other layouts may hold signed quantities such as
impact parameters, so there negatives are counted, warned about and recorded), and
more than ``max_empty_fraction`` (1%) of jets with an all-zero image. Fewer empty jets
are warned about and recorded in the manifest's ``quality``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from jetlib import __version__
from jetlib.data import schema
from jetlib.data.manifest import FORMAT, MANIFEST, open_dataset
from jetlib.data.shards import SparseRows, encode
from jetlib.data.splits import SPLITS, TRAIN, VAL, Assignment, SplitConfig, assign
from jetlib.data.store import Store, open_store, sha256_bytes, sha256_file
from jetlib.errors import ConfigError, DataError, ResourceError
from jetlib.progress import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    shard_rows: int = 1024  # jets per shard, at most (~5 MB for 3-channel 125x125 images)
    row_group_rows: int = 256  # jets per Parquet row group: the loader's unit of work, DDP's too
    image_size: int | None = 125  # required image side in pixels; None accepts any square image
    memory_mb: int = 1024  # RAM for the external shuffle before spilling to local disk
    block_mb: int = 64  # images read from the HDF5 file per step
    pixel_max: float = schema.ENERGY_MAX  # GeV: a pixel above this is refused as non-physical
    max_empty_fraction: float = 0.01  # more jets than this with an all-zero image are refused
    # key names the file uses instead of a public layout's: ((role, key), ...), roles images, y, m0, pt
    keys: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "keys", tuple(sorted(schema.check_keys(dict(self.keys)).items())))
        if self.shard_rows < 1 or self.row_group_rows < 1 or self.row_group_rows > self.shard_rows:
            raise ConfigError("need 1 <= row-group rows <= shard rows")
        if self.memory_mb < 1 or self.block_mb < 1:
            raise ConfigError("memory and block sizes must be at least 1 MB")
        if not 0 < self.pixel_max < float("inf") or not 0 <= self.max_empty_fraction <= 1:
            raise ConfigError("need a finite pixel ceiling above 0 and an empty-jet fraction in [0, 1]")

    def identity(self) -> dict:
        """The settings that change what is written (memory and block sizes do not).

        Named keys count only when given, so a file ingested with its public names keeps the id it had.
        """
        out = {"split": asdict(self.split), "shard_rows": self.shard_rows, "row_group_rows": self.row_group_rows}
        return {**out, "keys": dict(self.keys)} if self.keys else out


def dataset_id(source_sha256: str, cfg: IngestConfig) -> str:
    blob = json.dumps({"format": FORMAT, "source": source_sha256, **cfg.identity()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def clean_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if not cleaned:
        raise ConfigError(f"dataset name {name!r} has no usable characters (letters, digits, . _ -)")
    return cleaned[:64]


# --- pass 1: scatter rows towards their shards ----------------------------------------------

@dataclass
class _Rows:
    """Rows in flight between the source and their shard, each with its destination code."""

    code: np.ndarray  # int64: (split, tier, shard) packed by _code
    order: np.ndarray  # int64: position in the (split, tier) group
    jet: np.ndarray  # int64: source row
    sparse: SparseRows
    scalars: dict

    @property
    def nbytes(self) -> int:
        s = self.sparse
        return (self.code.nbytes * 3 + s.offsets.nbytes + s.idx.nbytes + s.val.nbytes
                + sum(v.nbytes for v in self.scalars.values()))

    def take(self, rows: np.ndarray) -> _Rows:
        return _Rows(self.code[rows], self.order[rows], self.jet[rows], self.sparse.take(rows),
                     {k: v[rows] for k, v in self.scalars.items()})

    @classmethod
    def concat(cls, parts: list[_Rows]) -> _Rows:
        return cls(*(np.concatenate([getattr(p, a) for p in parts]) for a in ("code", "order", "jet")),
                   SparseRows.concat([p.sparse for p in parts]),
                   {k: np.concatenate([p.scalars[k] for p in parts]) for k in parts[0].scalars})

    def save(self, path: Path) -> None:
        np.savez(path, code=self.code, order=self.order, jet=self.jet, offsets=self.sparse.offsets,
                 idx=self.sparse.idx, val=self.sparse.val, **{f"s_{k}": v for k, v in self.scalars.items()})

    @classmethod
    def load(cls, path: Path) -> _Rows:
        z = np.load(path)
        return cls(z["code"], z["order"], z["jet"], SparseRows(z["offsets"], z["idx"], z["val"]),
                   {k[2:]: z[k] for k in z.files if k.startswith("s_")})


def _code(split, tier, shard):
    return (np.asarray(split, np.int64) << 40) | (np.asarray(tier, np.int64) << 32) | shard


def _decode(code: int) -> tuple[int, int, int]:
    return code >> 40, (code >> 32) & 0xFF, code & 0xFFFFFFFF


def _group(rows: _Rows):
    """Yield (code, rows with that code)."""
    perm = np.argsort(rows.code, kind="stable")
    codes, starts = np.unique(rows.code[perm], return_index=True)
    bounds = [*starts[1:], len(perm)]
    for c, a, b in zip(codes, starts, bounds, strict=True):
        yield int(c), rows.take(perm[a:b])


class _Buckets:
    """Rows grouped by destination shard: in memory up to a budget, spilled to .npz files past it."""

    def __init__(self, tmp: Path, budget_bytes: int):
        self.tmp, self.budget = tmp, budget_bytes
        self.pending: list[_Rows] = []
        self.pending_bytes = 0
        self.spills = 0
        self.by_code: dict[int, list[_Rows]] = {}

    def add(self, rows: _Rows) -> None:
        self.pending.append(rows)
        self.pending_bytes += rows.nbytes
        if self.pending_bytes > self.budget:
            self._spill()

    def _spill(self) -> None:
        for code, rows in _group(_Rows.concat(self.pending)):
            folder = self.tmp / str(code)
            folder.mkdir(exist_ok=True)
            rows.save(folder / f"{self.spills}.npz")
        self.pending, self.pending_bytes = [], 0
        self.spills += 1

    def finish(self) -> None:
        if self.pending:
            self.by_code = {c: [r] for c, r in _group(_Rows.concat(self.pending))}
        self.pending = []

    def codes(self) -> list[int]:
        on_disk = {int(p.name) for p in self.tmp.iterdir() if p.is_dir()}
        return sorted(on_disk | set(self.by_code))

    def take(self, code: int) -> _Rows:
        parts = list(self.by_code.pop(code, []))
        folder = self.tmp / str(code)
        if folder.is_dir():
            parts += [_Rows.load(p) for p in sorted(folder.iterdir())]
        rows = _Rows.concat(parts)
        return rows.take(np.argsort(rows.order, kind="stable"))


@dataclass
class _Quality:
    """Per-jet checks of pass 1: non-physical pixels refused at once, empty jets counted."""

    path: str
    layout: str  # the image key, as the messages name it
    pixel_max: float
    energies: bool  # every channel is an energy (the quark/gluon layout): a negative pixel is refused
    empty_jets: int = 0
    first_empty: int | None = None
    negative_pixels: int = 0

    def check(self, start: int, block: np.ndarray) -> None:
        """``block`` (B, C, H, W) holds jets ``start .. start + B - 1`` of the file."""
        for bad, what in ((block > self.pixel_max, f"above the {self.pixel_max:,.0f} GeV ceiling"),
                          (block < 0, "negative (Tracks, ECAL and HCAL are energies)")):
            if what.startswith("negative"):
                self.negative_pixels += int(bad.sum())
                if not self.energies:
                    continue
            if bad.any():
                b, c, i, j = (int(v) for v in np.argwhere(bad)[0])
                raise DataError(f"{self.path}: '{self.layout}' has {block[b, c, i, j].item():g} at jet {start + b} "
                                f"(channel {c}, pixel {i},{j}): {what}; refused as non-physical")
        empty = ~block.reshape(len(block), -1).any(axis=1)
        if empty.any():
            self.empty_jets += int(empty.sum())
            if self.first_empty is None:
                self.first_empty = start + int(np.argmax(empty))

    def finish(self, n_jets: int, max_fraction: float) -> dict:
        """Refuse too many empty jets; warn about the rest; the manifest's ``quality`` record."""
        if self.empty_jets > max_fraction * n_jets:
            raise DataError(f"{self.path}: {self.empty_jets:,} of {n_jets:,} jets in '{self.layout}' have an all-zero "
                            f"image (first: jet {self.first_empty}), more than {max_fraction:.0%}: refused")
        if self.empty_jets:
            log.warning("%s: %d of %d jets have an all-zero image (first: jet %d); kept, and recorded in the "
                        "manifest", self.path, self.empty_jets, n_jets, self.first_empty)
        if self.negative_pixels:
            log.warning("%s: %d negative pixels in '%s' (channels of unknown meaning); kept, and recorded in the "
                        "manifest", self.path, self.negative_pixels, self.layout)
        return {"empty_jets": self.empty_jets, "negative_pixels": self.negative_pixels,
                "pixel_max": self.pixel_max, "max_empty_fraction": max_fraction}


@dataclass
class _Stats:
    """Train-only pixel statistics, accumulated from sparse rows in float64."""

    channels: int
    pixels_per_channel: int
    sum: np.ndarray = None
    sumsq: np.ndarray = None
    nnz: np.ndarray = None
    max: np.ndarray = None
    jets: int = 0

    def __post_init__(self):
        c = self.channels
        self.sum, self.sumsq, self.nnz = np.zeros(c), np.zeros(c), np.zeros(c, np.int64)
        self.max = np.zeros(c)

    def add(self, sparse: SparseRows) -> None:
        ch = sparse.idx // self.pixels_per_channel
        v = sparse.val.astype(np.float64)
        self.sum += np.bincount(ch, weights=v, minlength=self.channels)
        self.sumsq += np.bincount(ch, weights=v * v, minlength=self.channels)
        self.nnz += np.bincount(ch, minlength=self.channels)
        if len(v):
            np.maximum.at(self.max, ch, v)
        self.jets += len(sparse)

    def to_json(self) -> dict:
        count = self.jets * self.pixels_per_channel
        mean = self.sum / count
        std = np.sqrt(np.maximum(self.sumsq / count - mean * mean, 0.0))
        return {"mean": mean.tolist(), "std": std.tolist(), "max": self.max.tolist(),
                "nonzero_fraction": (self.nnz / count).tolist(), "sum": self.sum.tolist()}


def _scatter(info: schema.SourceInfo, plan: Assignment, scalars: dict, cfg: IngestConfig,
             buckets: _Buckets) -> tuple[_Stats, dict]:
    """Pass 1: read every image once, validate it, encode it and send it towards its shard."""
    stats = _Stats(info.channels, info.height * info.width)
    quality = _Quality(info.path, info.keys["images"], cfg.pixel_max, info.layout == "X_jets")
    shard = plan.order // cfg.shard_rows
    code = _code(plan.split, plan.tier, shard)
    rows_per_block = schema.block_rows(info, cfg.block_mb << 20)
    with schema.open_source(info.path) as f, progress(total=info.n_jets, desc="ingest", unit="jet") as bar:
        for start, block in schema.iter_blocks(f, info, rows_per_block):
            quality.check(start, block)
            sel = slice(start, start + len(block))
            sparse = SparseRows.from_dense(block)
            is_train = plan.split[sel] == TRAIN
            stats.add(sparse.take(np.flatnonzero(is_train)) if not is_train.all() else sparse)
            buckets.add(_Rows(code[sel], plan.order[sel], np.arange(sel.start, sel.stop), sparse,
                              {k: v[sel] for k, v in scalars.items()}))
            bar.update(len(block))
    buckets.finish()
    return stats, quality.finish(info.n_jets, cfg.max_empty_fraction)


# --- pass 2: write shards ----------------------------------------------------------------

def _write_shards(store: Store, buckets: _Buckets, plan: Assignment, cfg: IngestConfig):
    """Encode and upload every shard; returns (records per split, shards reused from a killed run)."""
    expected = plan.group_sizes()
    records: dict[str, list[dict]] = {s: [] for s in SPLITS}
    reused = 0
    codes = buckets.codes()
    for code in progress(codes, desc="write shards", unit="shard"):
        split, tier, k = _decode(code)
        rows = buckets.take(code)
        want = min(cfg.shard_rows, expected[(split, tier)] - k * cfg.shard_rows)
        if len(rows.jet) != want:  # an invariant of _scatter, checked because a wrong shard is silent
            raise RuntimeError(f"shard {code}: {len(rows.jet)} rows, expected {want}")
        data = encode(rows.jet, rows.sparse, rows.scalars, cfg.row_group_rows)
        sha = sha256_bytes(data)
        key = f"{SPLITS[split]}/t{tier}-{k:05d}.parquet"
        if store.stored_sha256(key) == sha:
            reused += 1
        else:
            store.put_bytes(key, data, sha256=sha)
        records[SPLITS[split]].append({"key": key, "tier": tier, "rows": len(rows.jet), "bytes": len(data),
                                       "sha256": sha})
    return records, reused


def _class_counts(labels: np.ndarray | None, mask: np.ndarray) -> dict | None:
    if labels is None:
        return None
    vals, counts = np.unique(labels[mask], return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(vals, counts, strict=True)}


def _scalar_stats(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "p01": float(np.percentile(values, 1)),
            "p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


def _manifest(name, ds_id, info, source_sha, cfg, plan, scalars, stats, records, quality) -> dict:
    y = scalars.get("y")
    train, val = plan.split == TRAIN, plan.split == VAL
    subsets = []
    for j, f in enumerate(cfg.split.label_fractions):
        in_subset = train & (plan.tier <= j)
        # the validation subset that goes with this label budget (splits.py, rule 4)
        val_tiers = j + 1 if plan.val_per_class[f] is not None else len(cfg.split.label_fractions)
        in_val = val & (plan.tier < val_tiers)
        subsets.append({"fraction": f, "tiers": j + 1, "rows": int(in_subset.sum()),
                        "per_class": plan.subset_per_class[f], "class_counts": _class_counts(y, in_subset),
                        "val_tiers": val_tiers, "val_rows": int(in_val.sum()),
                        "val_per_class": plan.val_per_class[f], "val_class_counts": _class_counts(y, in_val)})
    splits = {s: {"rows": int((plan.split == i).sum()), "class_counts": _class_counts(y, plan.split == i),
                  "shards": records[s]} for i, s in enumerate(SPLITS)}
    value_dtype = "float64" if info.dtype == "float64" else "float32"
    m = {
        "format": FORMAT, "name": f"{name}-{ds_id}", "id": ds_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "jetlib_version": __version__,
        "source": {**info.to_json(), "sha256": source_sha, "bytes": os.path.getsize(info.path)},
        "image": {"channels": info.channels, "height": info.height, "width": info.width,
                  "channel_names": info.channel_names, "value_dtype": value_dtype, "layout": "CHW",
                  "index": "flat c*H*W + i*W + j"},
        "labelled": info.labelled,
        "config": cfg.identity(),
        "splits": splits,
        "subsets": subsets,
        "stats": {"channels": {"names": info.channel_names, **stats.to_json()}},
        "quality": quality,
        "bytes": {"shards": sum(r["bytes"] for rs in records.values() for r in rs),
                  "dense_float32": info.n_jets * info.channels * info.height * info.width * 4},
    }
    for key in ("m0", "pt"):
        if key in scalars:
            m["stats"][key] = _scalar_stats(scalars[key][train])
    return m


# --- spill folders -----------------------------------------------------------------------

SPILL_PREFIX = "jetlib-ingest-"
OWNER = ".owner"  # in a spill folder: {"host", "pid"} of the ingest that made it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_spills(tmp_root: str | None) -> list[Path]:
    """Remove the spill folders of killed ingests on this machine (their process is gone); returns them.

    A folder is removed only if its owner file names this host and a process that no
    longer runs: a live ingest's folder, another machine's (a shared /tmp) and folders
    without an owner file are left alone."""
    root, host, removed = Path(tmp_root or tempfile.gettempdir()), socket.gethostname(), []
    for folder in root.glob(f"{SPILL_PREFIX}*"):
        try:
            owner = json.loads((folder / OWNER).read_text())
            stale = owner["host"] == host and owner["pid"] != os.getpid() and not _alive(int(owner["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            log.info("removed the spill folder of a killed ingest: %s", folder)
    return removed


@contextmanager
def _spill_folder(tmp_root: str | None):
    """A spill folder with an owner file, removed on return, on an error and on SIGTERM."""
    sweep_spills(tmp_root)
    folder = Path(tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=tmp_root))
    previous = None
    if threading.current_thread() is threading.main_thread():
        # a pod's termination (SIGTERM) must unwind through the cleanup below, not skip it
        def terminate(signum, frame):
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, terminate)
    try:
        (folder / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        yield folder
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceError(f"no space left for the ingest's spill files in {folder.parent} "
                                f"({e.strerror}): free space there, point JETLIB_TMPDIR at a larger disk, or "
                                f"raise --memory-mb") from None
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def ingest(source: str | os.PathLike, store_uri: str, name: str | None = None,
           cfg: IngestConfig | None = None) -> str:
    """Ingest ``source`` into ``store_uri`` and return the committed dataset's URI."""
    cfg = cfg or IngestConfig()
    t0 = time.perf_counter()
    info = schema.inspect_source(source, cfg.image_size, dict(cfg.keys))
    store = open_store(store_uri)
    store.check_writable()  # an unreachable or read-only store fails before any long work
    with progress(total=os.path.getsize(source), desc="sha256", unit="B", unit_scale=True) as bar:
        source_sha = sha256_file(source, bar=bar)
    ds_id = dataset_id(source_sha, cfg)
    name = clean_name(name or Path(source).stem)
    ds_store = store.child(f"datasets/{name}-{ds_id}")
    if ds_store.exists(MANIFEST):
        open_dataset(ds_store.uri)  # a committed dataset must still parse
        log.info("already ingested: %s", ds_store.uri)
        return ds_store.uri
    scalars = schema.read_scalars(info)
    plan = assign(info.n_jets, scalars.get("y"), cfg.split)
    with _spill_folder(os.environ.get("JETLIB_TMPDIR")) as tmp:
        buckets = _Buckets(tmp, cfg.memory_mb << 20)
        stats, quality = _scatter(info, plan, scalars, cfg, buckets)
        records, reused = _write_shards(ds_store, buckets, plan, cfg)
    manifest = _manifest(name, ds_id, info, source_sha, cfg, plan, scalars, stats, records, quality)
    ds_store.put_bytes(MANIFEST, json.dumps(manifest, indent=1, allow_nan=False).encode())
    n_shards = sum(len(r) for r in records.values())
    ratio = manifest["bytes"]["dense_float32"] / max(manifest["bytes"]["shards"], 1)
    log.info("ingested %d jets into %d shards (%.1fx smaller than dense float32) in %.1f s%s",
             info.n_jets, n_shards, ratio, time.perf_counter() - t0,
             f"; {reused} shards were already in the store" if reused else "")
    return ds_store.uri
