"""Sparse Parquet shards: the on-store form of jet images.

Jet images are ~99% zeros, so a shard stores, per jet, only the non-zero pixels as
a flat index into the channel-first image and the value there:

======  ====================  =============================================
column  type                  meaning
======  ====================  =============================================
jet     int64                 row of the jet in the source HDF5 file
idx     list<int32>           flat pixel index ``c*H*W + i*W + j``, ascending
val     list<float32|64>      pixel value at ``idx`` (float64 only for float64 sources)
y       int8                  1 = quark, 0 = gluon (labelled datasets only)
m0      float64               jet mass, GeV (labelled datasets only)
pt      float64               jet pT, GeV (labelled datasets only)
======  ====================  =============================================

The encoding is lossless: densifying gives back the exact input values (float16
widens to float32 exactly). Row groups of ``row_group_rows`` jets are the unit the
loader reads, so DDP ranks can split a shard between them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCALAR_TYPES = {"y": pa.int8(), "m0": pa.float64(), "pt": pa.float64()}


@dataclass
class SparseRows:
    """A batch of sparse images: row ``r`` has ``idx[offsets[r]:offsets[r+1]]`` and the same ``val``."""

    offsets: np.ndarray  # (B + 1,) int64
    idx: np.ndarray  # (nnz,) int32, flat channel-first pixel index
    val: np.ndarray  # (nnz,) float32 or float64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_dense(cls, images: np.ndarray) -> SparseRows:
        """Encode ``images`` (B, C, H, W), C-contiguous; float16 values are widened to float32."""
        b = images.shape[0]
        flat = images.reshape(b, -1)
        rows, idx = np.nonzero(flat)  # row-major: ascending idx within each row
        val = flat[rows, idx]
        if val.dtype == np.float16:
            val = val.astype(np.float32)
        offsets = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=b), out=offsets[1:])
        return cls(offsets, idx.astype(np.int32), val)

    def take(self, rows: np.ndarray) -> SparseRows:
        """The rows ``rows`` (any order, repeats allowed), gathered without a Python loop."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, counts = self.offsets[rows], self.counts[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        # position p of the output maps to starts[row(p)] + (p - offsets[row(p)])
        gather = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        return SparseRows(offsets, self.idx[gather], self.val[gather])

    @classmethod
    def concat(cls, parts: list[SparseRows]) -> SparseRows:
        if len(parts) == 1:
            return parts[0]
        sizes = np.cumsum([0] + [p.offsets[-1] for p in parts[:-1]])
        shifted = [p.offsets[1:] + s for p, s in zip(parts, sizes, strict=True)]
        offsets = np.concatenate([parts[0].offsets[:1], *shifted])
        return cls(offsets, np.concatenate([p.idx for p in parts]), np.concatenate([p.val for p in parts]))

    def to_dense(self, shape: tuple[int, int, int], dtype=None) -> np.ndarray:
        """Densify to (B, C, H, W) with NumPy (reference path; the loader densifies with torch)."""
        b = len(self)
        out = np.zeros((b, int(np.prod(shape))), dtype=dtype or self.val.dtype)
        rows = np.repeat(np.arange(b), self.counts)
        out[rows, self.idx] = self.val
        return out.reshape(b, *shape)


def encode(jet: np.ndarray, sparse: SparseRows, scalars: dict[str, np.ndarray],
           row_group_rows: int = 256) -> bytes:
    """One shard as Parquet bytes. ``scalars`` holds ``y``, ``m0``, ``pt`` or nothing."""
    offsets = pa.array(sparse.offsets.astype(np.int32))
    columns = {
        "jet": pa.array(jet.astype(np.int64)),
        "idx": pa.ListArray.from_arrays(offsets, pa.array(sparse.idx)),
        "val": pa.ListArray.from_arrays(offsets, pa.array(sparse.val)),
    }
    for name, typ in SCALAR_TYPES.items():
        if name in scalars:
            columns[name] = pa.array(scalars[name], type=typ)
    table = pa.table(columns)
    buf = io.BytesIO()
    # Sorted pixel indices delta-encode to a few bits each; float values compress
    # best split by byte. zstd on top. (Measured in benchmarks/data.py.)
    pq.write_table(
        table, buf, row_group_size=row_group_rows, compression="zstd", compression_level=3,
        use_dictionary=["y"], write_statistics=False,
        column_encoding={"idx": "DELTA_BINARY_PACKED", "val": "BYTE_STREAM_SPLIT", "jet": "DELTA_BINARY_PACKED"},
    )
    return buf.getvalue()


def decode(table: pa.Table) -> tuple[np.ndarray, SparseRows, dict[str, np.ndarray]]:
    """(jet ids, sparse images, scalars) from a shard table, without copying pixel data."""
    def lists(name):
        col = table.column(name).combine_chunks()
        raw = col.offsets.to_numpy()  # a sliced ListArray keeps its child whole: cut it to the slice
        return raw, col.values.to_numpy(zero_copy_only=False)[raw[0]:raw[-1]]

    raw, idx = lists("idx")
    _, val = lists("val")
    offsets = (raw - raw[0]).astype(np.int64)
    scalars = {n: table.column(n).to_numpy() for n in SCALAR_TYPES if n in table.column_names}
    return table.column("jet").to_numpy(), SparseRows(offsets, idx, val), scalars


def parquet_file(data: bytes) -> pq.ParquetFile:
    return pq.ParquetFile(pa.BufferReader(data))
