"""The streaming loader's host path as it was at commit 8d4aafb: the baseline of ``stream_host_speedup``.

The streaming host path per process is meant to run at 2x the old one. This module keeps the
old one (jetlib at commit 8d4aafb, the parent of the change) runnable beside the new loader,
so that ``benchmarks/data.py`` measures both in the same run on the same dataset: one prefetch
thread reads and decodes each row group; the consumer thread pools a window of pieces,
concatenates and permutes it, takes each batch's rows and turns them into host tensors with
``idx`` as int64 (what the old ``_densify`` did before its ``.to(device)``). The pieces, their
per-epoch order and the window shuffle are the old loader's; ``tests/test_bench_data.py``
checks that its batches are exactly the new loader's.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from jetlib.data.manifest import Dataset
from jetlib.data.shards import SparseRows, decode, parquet_file


def _pieces(ds: Dataset, shards: list[dict]) -> list[tuple[int, int, int, int]]:
    """(shard, row group, lo, hi) covering every row once (one process: no finer cut for ranks)."""
    rg = ds.manifest["config"]["row_group_rows"]
    rows = sum(s["rows"] for s in shards)
    pieces = [(i, g, 0, min(rg, s["rows"] - start))
              for i, s in enumerate(shards) for g, start in enumerate(range(0, s["rows"], rg))]
    if 0 < len(pieces) < 4:
        step = max(1, rows // 4)
        pieces = [(i, g, lo, min(lo + step, hi)) for i, g, _, hi in pieces for lo in range(0, hi, step)]
    return pieces


def _piece(jet, sparse, scalars, rows) -> tuple:
    return jet[rows], sparse.take(rows), {k: v[rows] for k, v in scalars.items()}


def legacy_host_batches(ds: Dataset, split: str = "train", *, batch_size: int, seed: int, epoch: int,
                        window: int = 8, prefetch: int = 4) -> Iterator[dict]:
    """One epoch of host tensors (``idx``, ``val``, ``counts``, ``jet``, ``y``, ``m0``, ``pt``), shuffled,
    full batches only, by the pre-issue-16 code path."""
    shards = ds.shards(split)
    cache: dict[str, bytes] = {}  # the old reader's in-memory LRU, which held every shard of these sizes
    pieces = _pieces(ds, shards)
    mine = np.random.default_rng([seed, epoch]).permutation(len(pieces)).tolist()
    n_batches = sum(hi - lo for _, _, lo, hi in pieces) // batch_size

    def read(p: int) -> tuple:
        i, group, lo, hi = pieces[p]
        sha = shards[i]["sha256"]
        if sha not in cache:
            cache[sha] = ds.read_shard(shards[i])
        jet, sparse, scalars = decode(parquet_file(cache[sha]).read_row_group(group))
        return (jet, sparse, scalars) if (lo, hi) == (0, len(jet)) else _piece(jet, sparse, scalars,
                                                                                np.arange(lo, hi))

    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce() -> None:
        for p in mine:
            if stop.is_set():
                return
            q.put(read(p))
        q.put(None)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    rng = np.random.default_rng([seed, epoch, 0, 1])
    window_rows = window * ds.manifest["config"]["row_group_rows"]
    pool: list[tuple] = []
    pooled, emitted, done = 0, 0, False
    try:
        while emitted < n_batches:
            while not done and pooled < max(window_rows, batch_size):
                item = q.get()
                if item is None:
                    done = True
                else:
                    pool.append(item)
                    pooled += len(item[0])
            if pooled == 0:
                break
            if len(pool) == 1:
                jet, sparse, scalars = pool[0]
            else:
                jet, sparse = np.concatenate([p[0] for p in pool]), SparseRows.concat([p[1] for p in pool])
                scalars = {k: np.concatenate([p[2][k] for p in pool]) for k in pool[0][2]}
            jet, sparse, scalars = _piece(jet, sparse, scalars, rng.permutation(pooled))
            take = (pooled // batch_size) * batch_size if not done else pooled
            for a in range(0, take, batch_size):
                if emitted == n_batches:
                    break
                bj, bs, bsc = _piece(jet, sparse, scalars, np.arange(a, min(a + batch_size, take)))
                parts = {"idx": torch.from_numpy(np.ascontiguousarray(bs.idx)).to(torch.int64),
                         "val": torch.from_numpy(np.ascontiguousarray(bs.val)).to(torch.float32),
                         "counts": torch.from_numpy(np.ascontiguousarray(bs.counts)),
                         "jet": torch.from_numpy(np.ascontiguousarray(bj))}
                for k, dtype in (("y", torch.int64), ("m0", torch.float32), ("pt", torch.float32)):
                    if k in bsc:
                        parts[k] = torch.from_numpy(np.ascontiguousarray(bsc[k])).to(dtype)
                yield parts
                emitted += 1
            rest = np.arange(take, pooled)
            pool = [_piece(jet, sparse, scalars, rest)] if len(rest) else []
            pooled = len(rest)
    finally:
        stop.set()
        while worker.is_alive():  # unblock a put on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
