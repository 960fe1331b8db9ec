"""Load a committed dataset back as dense ``(B, C, H, W)`` float tensors for training.

Two modes give exactly the same batches (bit for bit) for the same seed, epoch and rank:

``resident``
    The split's shards are read once (on the first pass) into flat arrays on the
    training device: sparse pixels (int32 index, float32 value, already normalised),
    per-jet offsets and counts, scalars. Each epoch the batch order is computed on the
    host from the piece sizes alone (one int64 per jet, copied once per epoch), and
    each batch is densified on the device by a fixed-capacity gather/scatter: every
    batch of ``B`` jets gathers exactly ``capacity(B)`` entries (the sum of the ``B``
    largest per-jet pixel counts of the split) and sends the unused ones to a sink
    element, so the kernels see one shape and never wait for the host.
``stream``
    Shards are fetched, verified and decoded piece by piece while the model trains,
    for splits too big for the device. A background thread does all the host work:
    the fetch, the decode, the window's concatenation and shuffle, the gather of each
    batch's rows and, on CPU, the densify itself; on CUDA it hands pinned buffers
    (``idx`` stays int32 over the bus) to the consumer, which only issues the copy and
    one scatter.

``auto`` (the default) picks ``resident`` when the split's estimated resident size
(:func:`resident_bytes`) is at most ``RESIDENT_FRACTION`` of the device's memory
(:func:`device_memory_bytes`: the GPU's total memory on CUDA; on CPU the physical RAM
or the cgroup limit, whichever is lower, divided by the node's ``LOCAL_WORLD_SIZE``
processes), otherwise ``stream``. Each rank holds the whole split, since the pieces it
reads change with the epoch.

Order, per epoch, for rank ``r`` of ``W`` (``W = 1`` outside DDP), in both modes:

* The unit of work is a *piece*: one Parquet row group (or a slice of one when a small
  subset has fewer row groups than ``4 * W``). Each epoch the pieces are permuted by
  ``(seed, epoch)`` and dealt round-robin to ranks, so ranks read disjoint parts.
* Rows from ``window`` consecutive pieces are pooled and permuted before batching
  (:func:`_schedule`): a two-level shuffle that never holds more than a window in
  memory when streaming. Shards are themselves randomly ordered at ingest.
* With ``drop_last`` (the training default) every rank yields the same number of full
  batches, as DDP requires; without it, every row is yielded exactly once.

Every shard read is verified against the manifest's sha256. Shards from an S3 store
are cached on local disk (``JETLIB_CACHE``, default ``~/.cache/jetlib``), re-verified
on every read; a small in-memory LRU avoids re-reading a shard for each row group.
Normalisation (``scale``: divide each channel by its train-split std) is applied to the
sparse values, so it costs nothing and keeps empty pixels at exactly zero.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jetlib import dist
from jetlib.data.manifest import Dataset, check_shard, open_dataset
from jetlib.data.prefetch import PREFETCH_THREAD, in_background
from jetlib.data.shards import SparseRows, decode, parquet_file
from jetlib.data.store import LocalStore, atomic_write, sha256_bytes
from jetlib.device import device_memory_bytes
from jetlib.errors import ConfigError

NORMALIZE = ("scale", "none")
MODES = ("auto", "resident", "stream")
RESIDENT_FRACTION = 0.25  # auto: resident when the split needs at most this share of the device's memory
_OPEN_FILES = 4  # parsed shards kept open per reading thread (their bytes are in the reader's LRU anyway)
_JET_BYTES = 32  # resident bytes per jet besides its pixels: offset, count, jet id, y, m0, pt


@dataclass
class Batch:
    """One batch on the target device."""

    x: torch.Tensor  # (B, C, H, W) float32
    jet: torch.Tensor  # (B,) int64: source row of each jet
    y: torch.Tensor | None = None  # (B,) int64: 1 = quark, 0 = gluon
    m0: torch.Tensor | None = None  # (B,) float32: jet mass, GeV
    pt: torch.Tensor | None = None  # (B,) float32: jet pT, GeV

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class _Piece:
    jet: np.ndarray
    sparse: SparseRows
    scalars: dict

    def __len__(self) -> int:
        return len(self.jet)

    def take(self, rows) -> _Piece:
        return _Piece(self.jet[rows], self.sparse.take(rows), {k: v[rows] for k, v in self.scalars.items()})

    @classmethod
    def concat(cls, parts: list[_Piece]) -> _Piece:
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.jet for p in parts]), SparseRows.concat([p.sparse for p in parts]),
                   {k: np.concatenate([p.scalars[k] for p in parts]) for k in parts[0].scalars})


@dataclass
class _Rows:
    """Row numbers standing in for a piece's data: the resident mode schedules these."""

    rows: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, rows) -> _Rows:
        return _Rows(self.rows[rows])

    @classmethod
    def concat(cls, parts: list[_Rows]) -> _Rows:
        return parts[0] if len(parts) == 1 else cls(np.concatenate([p.rows for p in parts]))


def _schedule(pieces: Iterator, concat, n_batches: int, batch_size: int, window_rows: int, shuffle: bool,
              rng: np.random.Generator) -> Iterator:
    """The batches of one epoch from a stream of pieces (data or :class:`_Rows`: both modes share it).

    Pieces are pooled until a window (or a batch) is full, the pool is permuted by ``rng``,
    whole batches are cut from it and the rest is carried into the next window; once the
    pieces run out the remainder makes the last (short) batches. At most ``n_batches``.
    """
    pool, pooled, emitted, done = [], 0, 0, False
    while emitted < n_batches:
        while not done and pooled < max(window_rows, batch_size):
            piece = next(pieces, None)
            if piece is None:
                done = True
            else:
                pool.append(piece)
                pooled += len(piece)
        if pooled == 0:
            return
        rows = concat(pool)
        order = rng.permutation(pooled) if shuffle else np.arange(pooled)
        take = (pooled // batch_size) * batch_size if not done else pooled
        for a in range(0, take, batch_size):
            if emitted == n_batches:
                return
            yield rows.take(order[a:min(a + batch_size, take)])  # one gather per batch, none per window
            emitted += 1
        rest = order[take:]
        pool = [rows.take(rest)] if len(rest) else []
        pooled = len(rest)


def _dense(flat: torch.Tensor, val: torch.Tensor, b: int, shape, sink: bool = False) -> torch.Tensor:
    """Scatter normalised sparse values into zeros: (B, C, H, W). ``flat`` (nnz,) is each value's index
    into the flattened batch; with ``sink`` an index of ``B*C*H*W`` writes to a dropped extra element."""
    chw = int(np.prod(shape))
    x = torch.zeros(b * chw + int(sink), device=val.device, dtype=torch.float32)
    x.index_put_((flat,), val)  # pixel indices are unique within a jet: no accumulation needed
    return x[:b * chw].view(b, *shape)


def resident_bytes(ds: Dataset, rows: int) -> int:
    """Estimated device bytes for ``rows`` resident jets: 8 bytes per non-zero pixel (int32 index,
    float32 value) at the train split's non-zero fraction (from the manifest), plus 32 per jet."""
    c, h, w = ds.image_shape
    filled = float(sum(ds.manifest["stats"]["channels"]["nonzero_fraction"])) * h * w  # pixels per jet
    return int(rows * (8 * filled + _JET_BYTES))


class ShardReader:
    """Verified shard bytes: local disk cache for remote stores, a small LRU in memory."""

    def __init__(self, ds: Dataset, cache_dir: str | os.PathLike | None = None, lru_bytes: int = 512 << 20):
        self.ds = ds
        self.remote = not isinstance(ds.store, LocalStore)
        default = Path(os.environ.get("JETLIB_CACHE", Path.home() / ".cache" / "jetlib")) / "shards"
        self.cache_dir = Path(cache_dir) if cache_dir else default
        self.lru: OrderedDict[str, bytes] = OrderedDict()
        self.lru_bytes, self.held = lru_bytes, 0
        self.lock = threading.Lock()

    def get(self, shard: dict) -> bytes:
        sha = shard["sha256"]
        with self.lock:
            if sha in self.lru:
                self.lru.move_to_end(sha)
                return self.lru[sha]
        if not self.remote:
            data = self.ds.read_shard(shard)
        else:
            path = self.cache_dir / f"{sha}.parquet"
            if path.is_file():
                data = path.read_bytes()
                if sha256_bytes(data) != sha:  # a damaged cache entry is refetched, not trusted
                    path.unlink()
                    data = self.ds.read_shard(shard)
                    atomic_write(path, data)
                else:  # checked on a cache hit too: a truncated or stale cache file is not the data
                    check_shard(data, shard, self.ds.store.key_uri(shard["key"]),
                                self.ds.manifest["config"]["row_group_rows"])
            else:
                data = self.ds.read_shard(shard)
                atomic_write(path, data)
        with self.lock:
            if sha not in self.lru:  # two reader threads may have fetched the same shard
                self.lru[sha] = data
                self.held += len(data)
            while self.held > self.lru_bytes and len(self.lru) > 1:
                _, old = self.lru.popitem(last=False)
                self.held -= len(old)
        return data


class _Resident:
    """A whole split on the device: sparse pixels in flat arrays, one entry per jet for the rest."""

    def __init__(self, loader: JetLoader):
        pieces = [loader._read_piece(p) for p in range(len(loader.pieces))]  # every piece once, in order
        whole = _Piece.concat(pieces) if pieces else None
        dev, (c, h, w) = loader.device, loader.shape
        s = whole.sparse
        counts = s.counts
        idx = torch.from_numpy(np.ascontiguousarray(s.idx, dtype=np.int32)).to(dev)  # int32: half the memory
        val = torch.from_numpy(np.ascontiguousarray(s.val)).to(dev, torch.float32)
        self.val = val * loader.scale[idx // (h * w)]  # normalised once: the same float32 products as streaming
        self.idx = idx
        self.starts = torch.from_numpy(s.offsets[:-1].copy()).to(dev)  # (N,) int64
        self.counts = torch.from_numpy(counts.astype(np.int64)).to(dev)
        self.jet = torch.from_numpy(np.ascontiguousarray(whole.jet, dtype=np.int64)).to(dev)
        self.scalars = {k: torch.from_numpy(np.ascontiguousarray(whole.scalars[k])).to(dev, dtype)
                        for k, dtype in (("y", torch.int64), ("m0", torch.float32), ("pt", torch.float32))
                        if k in whole.scalars}
        # capacity(b): the most pixels any b jets of the split can hold, so every batch has one shape
        self.capacity = np.concatenate([[0], np.cumsum(np.sort(counts)[::-1])]).astype(np.int64)
        sizes = [len(p) for p in pieces]
        self.first_row = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # of each piece
        self.device, self.shape = dev, (c, h, w)
        self.static = loader.static_shapes

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.idx, self.val, self.starts, self.counts, self.jet,
                                                          *self.scalars.values()))

    def batch(self, rows: torch.Tensor) -> Batch:
        """Densify the jets ``rows`` (B,) int64 on the device, without waiting for it.

        With ``static`` (the loader's ``static_shapes``, on for CUDA) a gather of exactly
        ``capacity(B)`` entries: one shape for every batch of B jets (CUDA graphs, compile)
        and no read-back of the batch's pixel count. Otherwise (CPU, where a read-back costs
        nothing) exactly the batch's entries, about a third of the work."""
        b, chw = rows.shape[0], int(np.prod(self.shape))
        counts, starts = self.counts[rows], self.starts[rows]
        ends = counts.cumsum(0)  # (B,): entry k of the batch belongs to the first jet whose end is > k
        if self.static:
            k = torch.arange(int(self.capacity[b]), device=self.device)
            row = torch.searchsorted(ends, k, right=True).clamp_max_(b - 1)
            used = k < ends[-1]
            src = torch.where(used, starts[row] + k - (ends[row] - counts[row]), 0)
            flat = torch.where(used, row * chw + self.idx[src], b * chw)  # unused: the sink past the batch
        else:
            total = int(ends[-1])
            row = torch.repeat_interleave(torch.arange(b), counts, output_size=total)
            src = torch.repeat_interleave(starts - (ends - counts), counts, output_size=total) + torch.arange(total)
            flat = row * chw + self.idx[src]
        x = _dense(flat, self.val[src], b, self.shape, sink=True)
        batch = Batch(x=x, jet=self.jet[rows])
        if self.scalars:
            batch.y, batch.m0, batch.pt = (self.scalars[k][rows] for k in ("y", "m0", "pt"))
        return batch


class JetLoader:
    """Batches of one split, or of a nested label-fraction subset of train.

    Args:
        dataset: dataset URI or an open :class:`Dataset`.
        split: ``train``, ``val`` or ``test``.
        fraction: label fraction of train (one of the manifest's subsets); None = all.
        batch_size: jets per batch *on this rank*.
        device: where batches are densified.
        shuffle: permute by ``(seed, epoch)``; default on for train only.
        seed: shuffle seed; :meth:`set_epoch` picks the epoch.
        drop_last: yield only full batches, equal in number on every rank; default = shuffle.
        normalize: ``scale`` (divide by train std per channel) or ``none``.
        rank, world_size: DDP position; default from :mod:`jetlib.dist`.
        window: row groups pooled per shuffle window.
        prefetch: batches prepared ahead by the background thread.
        mode: ``auto``, ``resident`` or ``stream`` (see the module docstring); :attr:`mode` holds the choice.
        readers: threads that fetch and decode pieces when streaming (0: up to 4, one per core).
    """

    def __init__(self, dataset: str | Dataset, split: str = "train", *, fraction: float | None = None,
                 batch_size: int = 256, device: str | torch.device = "cpu", shuffle: bool | None = None,
                 seed: int = 0, drop_last: bool | None = None, normalize: str = "scale",
                 rank: int | None = None, world_size: int | None = None, window: int = 8, prefetch: int = 4,
                 cache_dir: str | None = None, mode: str = "auto", readers: int = 0):
        self.ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
        if normalize not in NORMALIZE:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
        if mode not in MODES:
            raise ConfigError(f"loader mode must be one of {', '.join(MODES)}, got {mode!r}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be positive, got {batch_size}")
        self.split, self.fraction = split, fraction
        self.shards = self.ds.shards(split, fraction)
        self.batch_size, self.seed, self.window, self.prefetch = batch_size, seed, max(1, window), prefetch
        self.device = torch.device(device)
        self.shuffle = (split == "train") if shuffle is None else shuffle
        self.drop_last = self.shuffle if drop_last is None else drop_last
        self.rank = dist.rank() if rank is None else rank
        self.world_size = dist.world_size() if world_size is None else world_size
        self.shape = self.ds.image_shape
        scale = self.ds.channel_scale() if normalize == "scale" else np.ones(self.shape[0], np.float32)
        self.scale = torch.as_tensor(scale, device=self.device)
        self.reader = ShardReader(self.ds, cache_dir)
        self.pieces = self._pieces()
        self._open = threading.local()  # per thread: shard -> open ParquetFile, the newest _OPEN_FILES
        self.readers = max(1, min(readers, len(self.pieces))) if readers else max(1, min(4, os.cpu_count() or 1))
        if mode == "auto":
            fits = resident_bytes(self.ds, self.rows) <= RESIDENT_FRACTION * device_memory_bytes(self.device)
            mode = "resident" if fits else "stream"
        self.mode = mode
        self.static_shapes = self.device.type == "cuda"  # resident: fixed-capacity gathers (tests may set it)
        self.resident: _Resident | None = None  # read on the first pass
        self.epoch = 0
        self.set_epoch(0)

    @property
    def rows(self) -> int:
        """Rows in the split or subset (all ranks)."""
        return sum(s["rows"] for s in self.shards)

    def _pieces(self) -> list[tuple[int, int, int, int]]:
        """(shard, row group, lo, hi) covering every row once."""
        rg = self.ds.manifest["config"]["row_group_rows"]
        pieces = []
        for i, s in enumerate(self.shards):
            for g, start in enumerate(range(0, s["rows"], rg)):
                pieces.append((i, g, 0, min(rg, s["rows"] - start)))
        want = 4 * self.world_size
        if 0 < len(pieces) < want:  # too few row groups to share: cut them finer
            step = max(1, self.rows // want)
            pieces = [(i, g, lo, min(lo + step, hi)) for i, g, _, hi in pieces for lo in range(0, hi, step)]
        return pieces

    def _assignment(self, epoch: int) -> list[list[int]]:
        order = np.arange(len(self.pieces))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.pieces))
        return [order[r::self.world_size].tolist() for r in range(self.world_size)]

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (call before iterating, as with DistributedSampler)."""
        self.epoch = epoch
        self.mine = self._assignment(epoch)[self.rank]
        per_rank = [sum(self.pieces[p][3] - self.pieces[p][2] for p in ps) for ps in self._assignment(epoch)]
        self.rank_rows = per_rank[self.rank]
        if self.drop_last:
            self.n_batches = min(per_rank) // self.batch_size
        else:
            self.n_batches = -(-self.rank_rows // self.batch_size)

    def __len__(self) -> int:
        return self.n_batches

    def _read_piece(self, p: int) -> _Piece:
        shard_i, group, lo, hi = self.pieces[p]
        # a ParquetFile per thread: arrow's file readers are not safe to share between threads
        files = self._open.__dict__.setdefault("files", {})
        pf = files.get(shard_i)
        if pf is None:  # parse a shard's footer once per thread, not once per row group
            pf = files[shard_i] = parquet_file(self.reader.get(self.shards[shard_i]))
            while len(files) > _OPEN_FILES:
                files.pop(next(iter(files)))
        # one arrow thread per read: a row group is small; parallelism comes from the readers (_decoded)
        table = pf.read_row_group(group, use_threads=False)
        jet, sparse, scalars = decode(table)
        piece = _Piece(jet, sparse, scalars)
        return piece if (lo, hi) == (0, len(jet)) else piece.take(np.arange(lo, hi))

    def _plan(self, pieces: Iterator, concat) -> Iterator:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        window_rows = self.window * self.ds.manifest["config"]["row_group_rows"]
        return _schedule(pieces, concat, self.n_batches, self.batch_size, window_rows, self.shuffle, rng)

    def _decoded(self) -> Iterator[_Piece]:
        """This rank's pieces in order, fetched and decoded by ``readers`` threads, ``2 * readers`` ahead
        (Parquet decoding releases the GIL: one thread caps a process at one core's decode rate)."""
        if self.readers <= 1:
            yield from (self._read_piece(p) for p in self.mine)
            return
        pool = ThreadPoolExecutor(self.readers, thread_name_prefix=f"{PREFETCH_THREAD}-read")
        ahead: deque = deque()
        todo = iter(self.mine)
        try:
            for p in todo:
                ahead.append(pool.submit(self._read_piece, p))
                if len(ahead) >= 2 * self.readers:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:  # an early stop: queued reads are dropped, running ones finish on their own
            pool.shutdown(wait=False, cancel_futures=True)

    def _host_batches(self, pin: bool) -> Iterator[dict]:
        """Streaming, on the prefetch thread: read, decode, shuffle and gather each batch's rows into host
        tensors (``idx`` int32, ``val`` float32, ``counts``, ``jet``, scalars), pinned with ``pin``."""
        pieces = self._decoded()
        for rows in self._plan(pieces, _Piece.concat):
            s = rows.sparse

            def host(a, dtype=None):
                t = torch.from_numpy(np.ascontiguousarray(a))
                t = t if dtype is None else t.to(dtype)
                return t.pin_memory() if pin else t

            parts = {"idx": host(s.idx, torch.int32), "val": host(s.val, torch.float32),
                     "counts": host(s.counts), "jet": host(rows.jet, torch.int64)}
            for k, dtype in (("y", torch.int64), ("m0", torch.float32), ("pt", torch.float32)):
                if k in rows.scalars:
                    parts[k] = host(rows.scalars[k], dtype)
            yield parts

    def _to_device(self, parts: dict) -> Batch:
        """Sparse host tensors -> a dense :class:`Batch` on the device (asynchronous on CUDA)."""
        t = {k: v.to(self.device, non_blocking=True) for k, v in parts.items()}
        b, hw = len(t["jet"]), self.shape[1] * self.shape[2]
        idx = t["idx"]
        row = torch.repeat_interleave(torch.arange(b, device=self.device), t["counts"], output_size=len(idx))
        chw = hw * self.shape[0]
        x = _dense(row * chw + idx, t["val"] * self.scale[idx // hw], b, self.shape)
        return Batch(x=x, jet=t["jet"], y=t.get("y"), m0=t.get("m0"), pt=t.get("pt"))

    def _resident_batches(self) -> Iterator[Batch]:
        r = self.resident
        spans = (_Rows(np.arange(r.first_row[p], r.first_row[p + 1])) for p in self.mine)
        plan = [x.rows for x in self._plan(spans, _Rows.concat)]
        if not plan:
            return
        order = torch.from_numpy(np.concatenate(plan)).to(self.device)  # one copy per epoch
        at = 0
        for rows in plan:
            yield r.batch(order[at:at + len(rows)])
            at += len(rows)

    def __iter__(self) -> Iterator[Batch]:
        if self.n_batches == 0:
            return
        cuda = self.device.type == "cuda"
        if self.mode == "stream":
            parts = self._host_batches(pin=cuda)
            if not cuda:  # on CPU the densify is host work too: the prefetch thread does it
                yield from in_background((self._to_device(p) for p in parts), self.prefetch)
                return
            for p in in_background(parts, self.prefetch):
                yield self._to_device(p)  # a copy and a scatter, issued without waiting
            return
        if self.resident is None:
            self.resident = _Resident(self)
        if cuda:  # kernel launches only: the host never waits
            yield from self._resident_batches()
        else:  # on CPU the densify is host work: overlap it with the consumer's
            yield from in_background(self._resident_batches(), self.prefetch)
