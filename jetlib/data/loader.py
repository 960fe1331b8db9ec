"""Stream a committed dataset back as dense ``(B, C, H, W)`` float tensors for training.

Data path, per epoch, for rank ``r`` of ``W`` (``W = 1`` outside DDP)::

    shards (store) --fetch+sha256--> local cache --row groups--> pieces --shuffle window--> batches
                                                                                 |
                                    sparse idx/val --to(device)--> scatter into zeros --> (B, C, H, W)

* The unit of work is a *piece*: one Parquet row group (or a slice of one when a small
  subset has fewer row groups than ``4 * W``). Each epoch the pieces are permuted by
  ``(seed, epoch)`` and dealt round-robin to ranks, so ranks read disjoint parts.
* Rows from ``window`` consecutive pieces are pooled and permuted before batching: a
  two-level shuffle that never holds more than a window in memory. Shards are
  themselves randomly ordered at ingest, so this mixes well.
* With ``drop_last`` (the training default) every rank yields the same number of full
  batches, as DDP requires; without it, every row is yielded exactly once.
* Every shard read is verified against the manifest's sha256. Shards from an S3 store
  are cached on local disk (``JETLIB_CACHE``, default ``~/.cache/jetlib``), re-verified
  on every read; a small in-memory LRU avoids re-reading a shard for each row group.
* Batches are densified on the target device: only the sparse pixels cross the bus
  (pinned, non-blocking on CUDA), then one scatter fills a zero tensor. Normalisation
  (``scale``: divide each channel by its train-split std) is applied to the sparse
  values, so it costs nothing and keeps empty pixels at exactly zero.
* A background thread fetches and decodes the next pieces while the model trains.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jetlib import dist
from jetlib.data.manifest import Dataset, open_dataset
from jetlib.data.shards import SparseRows, decode, parquet_file
from jetlib.data.store import LocalStore, atomic_write, sha256_bytes
from jetlib.errors import ConfigError

NORMALIZE = ("scale", "none")
PREFETCH_THREAD = "jetlib-prefetch"  # the background reader's thread name
_PUT_TIMEOUT_S = 0.1  # how often a blocked producer checks whether the consumer has gone
_JOIN_TIMEOUT_S = 300.0  # a piece read in flight (an S3 fetch) is allowed to finish


def _offer(out: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room until ``stop`` is set; True if it was put."""
    while not stop.is_set():
        try:
            out.put(item, timeout=_PUT_TIMEOUT_S)
            return True
        except queue.Full:
            continue
    return False


def _take(q: queue.Queue, worker: threading.Thread):
    """The next item from the prefetch thread; an error, not a hang, if the thread died without a word."""
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            if not worker.is_alive() and q.empty():
                raise RuntimeError("the loader's prefetch thread ended without finishing the epoch") from None


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

    def take(self, rows) -> _Piece:
        return _Piece(self.jet[rows], self.sparse.take(rows), {k: v[rows] for k, v in self.scalars.items()})

    @classmethod
    def concat(cls, parts: list[_Piece]) -> _Piece:
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.jet for p in parts]), SparseRows.concat([p.sparse for p in parts]),
                   {k: np.concatenate([p.scalars[k] for p in parts]) for k in parts[0].scalars})


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
            else:
                data = self.ds.read_shard(shard)
                atomic_write(path, data)
        with self.lock:
            self.lru[sha] = data
            self.held += len(data)
            while self.held > self.lru_bytes and len(self.lru) > 1:
                _, old = self.lru.popitem(last=False)
                self.held -= len(old)
        return data


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
        prefetch: pieces decoded ahead by the background thread.
    """

    def __init__(self, dataset: str | Dataset, split: str = "train", *, fraction: float | None = None,
                 batch_size: int = 256, device: str | torch.device = "cpu", shuffle: bool | None = None,
                 seed: int = 0, drop_last: bool | None = None, normalize: str = "scale",
                 rank: int | None = None, world_size: int | None = None, window: int = 8, prefetch: int = 4,
                 cache_dir: str | None = None):
        self.ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
        if normalize not in NORMALIZE:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
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
        shard = self.shards[shard_i]
        table = parquet_file(self.reader.get(shard)).read_row_group(group)
        jet, sparse, scalars = decode(table)
        piece = _Piece(jet, sparse, scalars)
        return piece if (lo, hi) == (0, len(jet)) else piece.take(np.arange(lo, hi))

    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        """The prefetch thread: decoded pieces, then ``None`` (the end) or the exception that stopped it.

        Every ``put`` gives up once ``stop`` is set, the last ones included: a consumer that
        stops early leaves a full queue, and a plain ``put`` would block this thread forever.
        """
        try:
            for p in self.mine:
                if stop.is_set():
                    return
                if not _offer(out, self._read_piece(p), stop):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            _offer(out, e, stop)
            return
        _offer(out, None, stop)

    def _densify(self, piece: _Piece) -> Batch:
        c, h, w = self.shape
        s = piece.sparse
        pin = self.device.type == "cuda"

        def dev(a, dtype=None):
            t = torch.from_numpy(np.ascontiguousarray(a))
            if dtype is not None:
                t = t.to(dtype)
            return t.pin_memory().to(self.device, non_blocking=True) if pin else t.to(self.device)

        idx = dev(s.idx, torch.int64)
        val = dev(s.val, torch.float32)
        counts = dev(s.counts)
        b = len(s)
        rows = torch.repeat_interleave(torch.arange(b, device=self.device), counts, output_size=len(s.idx))
        val = val * self.scale[idx // (h * w)]
        x = torch.zeros(b * c * h * w, device=self.device, dtype=torch.float32)
        x.index_put_((rows * (c * h * w) + idx,), val)
        batch = Batch(x=x.view(b, c, h, w), jet=dev(piece.jet))
        if "y" in piece.scalars:
            batch.y = dev(piece.scalars["y"], torch.int64)
            batch.m0 = dev(piece.scalars["m0"], torch.float32)
            batch.pt = dev(piece.scalars["pt"], torch.float32)
        return batch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(q, stop), daemon=True, name=PREFETCH_THREAD)
        worker.start()
        window_rows = self.window * self.ds.manifest["config"]["row_group_rows"]
        pool: list[_Piece] = []
        pooled, emitted, done = 0, 0, False
        try:
            while emitted < self.n_batches:
                while not done and pooled < max(window_rows, self.batch_size):
                    item = _take(q, worker)
                    if item is None:
                        done = True
                    elif isinstance(item, BaseException):
                        raise item
                    else:
                        pool.append(item)
                        pooled += len(item.jet)
                if pooled == 0:
                    break
                rows = _Piece.concat(pool)
                if self.shuffle:
                    rows = rows.take(rng.permutation(pooled))
                n_full = pooled // self.batch_size
                take = n_full * self.batch_size if not done else pooled
                for a in range(0, take, self.batch_size):
                    if emitted == self.n_batches:
                        break
                    yield self._densify(rows.take(np.arange(a, min(a + self.batch_size, take))))
                    emitted += 1
                rest = np.arange(take, pooled)
                pool = [rows.take(rest)] if len(rest) else []
                pooled = len(rest)
        finally:  # also on break, an exception in the consumer, or garbage collection (GeneratorExit)
            stop.set()
            worker.join(timeout=_JOIN_TIMEOUT_S)  # it notices within one put timeout or one piece read
