"""Validation of jet-image HDF5 files, and bounded-memory reading of them.

Two public layouts are accepted (keys are case-sensitive):

=========  ===============================  =====================================
role       quark/gluon layout (3 channels)   8-channel layout
=========  ===============================  =====================================
images     ``X_jets`` (N, 125, 125, 3)       ``jet`` (N, 125, 125, 8)
label      ``y``  (1 = quark, 0 = gluon)      ``Y``
jet mass   ``m0`` (GeV)                       ``m``
jet pT     ``pt`` (GeV)                       ``pT``
=========  ===============================  =====================================

Images may be channel-last ``(N, H, W, C)`` or channel-first ``(N, C, H, W)``, in
float16, float32 or float64, chunked or contiguous, compressed or not. Scalars may
be ``(N,)`` or ``(N, 1)``. A file with only the image key is an unlabelled dataset.
Everything structural is checked by :func:`inspect_source` without reading the
images; pixel values (NaN, inf) are checked block by block as they stream through
:func:`iter_blocks`. Every problem is a :class:`~jetlib.errors.DataError` whose
message names the file, the key and, for values, the row.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jetlib.errors import DataError

# role -> key, per layout; the image key identifies the layout.
LAYOUTS = {
    "X_jets": {"images": "X_jets", "y": "y", "m0": "m0", "pt": "pt"},
    "jet": {"images": "jet", "y": "Y", "m0": "m", "pt": "pT"},
}
SCALAR_ROLES = ("y", "m0", "pt")
CHANNEL_NAMES = {3: ("Tracks", "ECAL", "HCAL")}
FLOAT_DTYPES = ("float16", "float32", "float64")
MAX_CHANNELS = 16  # an axis this small is a channel axis, never an image side


@dataclass(frozen=True)
class SourceInfo:
    """What :func:`inspect_source` learned about a file; stored in the dataset manifest."""

    path: str
    layout: str  # the image key: "X_jets" or "jet"
    keys: dict  # role -> key actually present
    n_jets: int
    channels: int
    height: int
    width: int
    channel_axis: str  # "last" (N, H, W, C) or "first" (N, C, H, W)
    dtype: str
    chunks: tuple | None
    compression: str | None
    labelled: bool

    @property
    def channel_names(self) -> list[str]:
        return list(CHANNEL_NAMES.get(self.channels, [f"ch{i}" for i in range(self.channels)]))

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = Path(self.path).name  # never record local paths of the machine that ingested
        d["chunks"] = list(self.chunks) if self.chunks else None
        return d


def open_source(path: str | os.PathLike):
    """Open an HDF5 file for reading (an ``h5py.File``), or raise a one-line DataError."""
    import h5py

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a folder, expected an HDF5 file")
    if not h5py.is_hdf5(p):
        raise DataError(f"{p}: not an HDF5 file")
    try:
        return h5py.File(p, "r")
    except OSError as e:
        reason = str(e).split("(", 1)[-1].rstrip(")") if "(" in str(e) else str(e)
        raise DataError(f"{p}: HDF5 file is truncated or corrupt ({reason})") from None


def _find_layout(f, path) -> str:
    import h5py

    for key in LAYOUTS:
        if key in f and isinstance(f[key], h5py.Dataset):
            return key
    found = ", ".join(sorted(f.keys())) or "none"
    raise DataError(f"{path}: no image dataset: expected key 'X_jets' (quark/gluon layout) or 'jet' "
                    f"(8-channel layout); found keys: {found}")


def inspect_source(path: str | os.PathLike, image_size: int | None = 125) -> SourceInfo:
    """Check the structure of ``path`` (keys, ranks, sizes, dtypes, lengths) without reading images.

    Args:
        path: HDF5 file.
        image_size: required height and width in pixels; None accepts any square image.
    """
    with open_source(path) as f:
        layout = _find_layout(f, path)
        roles = LAYOUTS[layout]
        ds = f[layout]
        shape = tuple(ds.shape)
        if len(shape) != 4:
            raise DataError(f"{path}: '{layout}' has shape {shape}: expected 4 dimensions, "
                            f"(N, H, W, C) or (N, C, H, W)")
        n = shape[0]
        if shape[1] == shape[2] and shape[3] <= MAX_CHANNELS:
            axis, (h, w, c) = "last", shape[1:]
        elif shape[2] == shape[3] and shape[1] <= MAX_CHANNELS:
            axis, (c, h, w) = "first", shape[1:]
        else:
            raise DataError(f"{path}: '{layout}' has shape {shape}: expected square images with at most "
                            f"{MAX_CHANNELS} channels, (N, H, W, C) or (N, C, H, W)")
        if image_size is not None and (h, w) != (image_size, image_size):
            raise DataError(f"{path}: '{layout}' images are {h}x{w} pixels, expected "
                            f"{image_size}x{image_size}")
        if n == 0:
            raise DataError(f"{path}: '{layout}' holds 0 jets")
        if ds.dtype.name not in FLOAT_DTYPES:
            raise DataError(f"{path}: '{layout}' has dtype {ds.dtype.name}, expected one of "
                            f"{', '.join(FLOAT_DTYPES)}")

        present = {r: roles[r] for r in SCALAR_ROLES if roles[r] in f}
        if present and len(present) < len(SCALAR_ROLES):
            missing = [roles[r] for r in SCALAR_ROLES if r not in present]
            found = ", ".join(sorted(f.keys()))
            raise DataError(f"{path}: key '{missing[0]}' is missing (layout '{layout}' needs "
                            f"{', '.join(roles[r] for r in SCALAR_ROLES)}; found keys: {found})")
        for key in present.values():
            s = f[key].shape
            if not (len(s) == 1 or (len(s) == 2 and s[1] == 1)):
                raise DataError(f"{path}: '{key}' has shape {s}, expected ({n},)")
            if s[0] != n:
                raise DataError(f"{path}: '{key}' has {s[0]} entries but '{layout}' has {n} jets")
            if f[key].dtype.kind not in "biuf":
                raise DataError(f"{path}: '{key}' has dtype {f[key].dtype}, expected numbers")
        return SourceInfo(
            path=str(path), layout=layout, keys={"images": layout, **present}, n_jets=n, channels=c,
            height=h, width=w, channel_axis=axis, dtype=ds.dtype.name,
            chunks=tuple(ds.chunks) if ds.chunks else None, compression=ds.compression,
            labelled=bool(present),
        )


def read_scalars(info: SourceInfo) -> dict[str, np.ndarray]:
    """The label, mass and pT arrays, validated: ``y`` int8 in {0, 1}; ``m0``, ``pt`` float64, finite.

    Returns an empty dict for an unlabelled file. These arrays are small (N values).
    """
    if not info.labelled:
        return {}
    out = {}
    with open_source(info.path) as f:
        for role in SCALAR_ROLES:
            key = info.keys[role]
            try:
                arr = np.asarray(f[key][...]).reshape(-1)
            except OSError:
                raise DataError(f"{info.path}: cannot read '{key}': file is truncated or corrupt") from None
            bad = ~np.isfinite(arr.astype(np.float64))
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"{info.path}: '{key}' has {arr[i].item()} at row {i}")
            if role == "y":
                wrong = (arr != 0) & (arr != 1)
                if wrong.any():
                    i = int(np.argmax(wrong))
                    raise DataError(f"{info.path}: '{key}' has value {arr[i].item()} at row {i}: labels must be "
                                    f"0 (gluon) or 1 (quark)")
                out[role] = arr.astype(np.int8)
            else:
                out[role] = arr.astype(np.float64)
    return out


def block_rows(info: SourceInfo, block_bytes: int = 64 << 20) -> int:
    """Rows per read: about ``block_bytes`` of images, a whole number of HDF5 chunks when chunked."""
    row_bytes = info.channels * info.height * info.width * np.dtype(info.dtype).itemsize
    rows = max(1, block_bytes // row_bytes)
    if info.chunks:
        step = info.chunks[0]
        rows = max(step, rows // step * step)
    return int(rows)


def iter_blocks(f, info: SourceInfo, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, images)`` with images ``(B, C, H, W)`` in the file's dtype, checked finite.

    ``f`` is the open file from :func:`open_source`; memory use is one block.
    """
    ds = f[info.layout]
    for start in range(0, info.n_jets, rows):
        stop = min(start + rows, info.n_jets)
        try:
            block = ds[start:stop]
        except OSError:
            raise DataError(f"{info.path}: cannot read '{info.layout}' jets {start}-{stop - 1}: "
                            f"file is truncated or corrupt") from None
        if info.channel_axis == "last":
            block = block.transpose(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        block = np.ascontiguousarray(block)
        finite = np.isfinite(block)
        if not finite.all():
            b, c, i, j = (int(v) for v in np.argwhere(~finite)[0])
            raise DataError(f"{info.path}: '{info.layout}' has {block[b, c, i, j].item()} at jet {start + b} "
                            f"(channel {c}, pixel {i},{j})")
        yield start, block
