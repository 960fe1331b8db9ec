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

A file that uses other key names is read by naming them (``keys``: role -> key, the
``--images-key``, ``--labels-key``, ``--mass-key`` and ``--pt-key`` flags of ``jetlib
ingest``), each checked by :func:`check_keys` and then validated exactly as the public
names are. A named image key that is neither ``X_jets`` nor ``jet`` reads as the
quark/gluon layout when its images have 3 channels (Tracks, ECAL, HCAL: energies, so a
negative pixel is refused; label keys default to ``y``, ``m0``, ``pt``), else as the
8-channel layout (signed pixels kept and counted; ``Y``, ``m``, ``pT``).

Images may be channel-last ``(N, H, W, C)`` or channel-first ``(N, C, H, W)``, in
float16, float32 or float64, chunked or contiguous, compressed or not. Scalars may
be ``(N,)`` or ``(N, 1)``. A file with only the image key is an unlabelled dataset.
Everything structural is checked by :func:`inspect_source` without reading the
images; pixel values (NaN, inf) are checked block by block as they stream through
:func:`iter_blocks`. Every problem is a :class:`~jetlib.errors.DataError` whose
message names the file, the key and, for values, the row.

Source files come from elsewhere, so a dataset is read only if its bytes are inside
the file (:func:`stored_inside`): a key that is an external or soft link, a virtual
dataset (data mapped from other files), a dataset with HDF5 *external storage* (raw
bytes in any local file, ``/proc/self/environ`` included) or with a filter HDF5 would
look for as a plugin (a shared library) is refused, naming the key, before a byte of
it is read. A dataset must also store what it declares (:func:`check_allocated`): a
file declaring 10,000,000 jets that wrote 160 would read as millions of empty jets.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jetlib.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# role -> key, per layout; the image key identifies the layout.
LAYOUTS = {
    "X_jets": {"images": "X_jets", "y": "y", "m0": "m0", "pt": "pt"},
    "jet": {"images": "jet", "y": "Y", "m0": "m", "pt": "pT"},
}
SCALAR_ROLES = ("y", "m0", "pt")
ROLES = ("images", *SCALAR_ROLES)
ROLE_FLAGS = {"images": "--images-key", "y": "--labels-key", "m0": "--mass-key", "pt": "--pt-key"}
# A key names a dataset at the top of the file: one HDF5 link name, no group path ('/'), no control
# characters (it is echoed in error lines and recorded in the manifest), not '.' (the file itself).
KEY_NAME = re.compile(r"[^/\x00-\x1f\x7f]{1,255}")
CHANNEL_NAMES = {3: ("Tracks", "ECAL", "HCAL")}
FLOAT_DTYPES = ("float16", "float32", "float64")
MAX_CHANNELS = 16  # an axis this small is a channel axis, never an image side
# HDF5's built-in filters and h5py's LZF: anything else makes HDF5 search HDF5_PLUGIN_PATH for a
# shared library to load, which a file from elsewhere must not trigger.
BUILTIN_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf"}
ENERGY_MAX = 14_000.0  # GeV: the LHC's collision energy; no jet, mass or pixel can carry more


@dataclass(frozen=True)
class SourceInfo:
    """What :func:`inspect_source` learned about a file; stored in the dataset manifest."""

    path: str
    layout: str  # the layout read: "X_jets" (quark/gluon) or "jet" (8-channel), whatever the key names
    keys: dict  # role -> key actually present ("images" is the image key)
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
        # best-effort: a read-only or NFS mount without flock still opens; a file another process
        # holds open for writing is still refused (h5py File(locking=...), HDF5 H5Pset_file_locking)
        return h5py.File(p, "r", locking="best-effort")
    except OSError as e:
        if "unable to lock file" in str(e):
            raise DataError(f"{p}: locked by another process (is it still being written?)") from None
        reason = str(e).split("(", 1)[-1].rstrip(")") if "(" in str(e) else str(e)
        raise DataError(f"{p}: HDF5 file is truncated or corrupt ({reason})") from None


def stored_inside(f, key: str, path) -> object:
    """The dataset ``key`` of the open file ``f``, refused unless its bytes are inside the file itself.

    The link is inspected without following it (``f.id.links``, h5py's low-level link proxy):
    ``key in f`` and ``f[key]`` would open an external link's target file.
    """
    import h5py
    from h5py import h5d, h5l

    name = key.encode()
    info = f.id.links.get_info(name)
    if info.type == h5l.TYPE_EXTERNAL:
        target_file, target = (v.decode(errors="replace") for v in f.id.links.get_val(name))
        raise DataError(f"{path}: '{key}' is an external link to {target_file}:{target}: refused (only data "
                        f"stored inside the file itself is read)")
    if info.type != h5l.TYPE_HARD:
        raise DataError(f"{path}: '{key}' is a soft or user-defined link: refused (store the dataset itself "
                        f"under '{key}')")
    ds = f[key]
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"{path}: '{key}' is a group, expected a dataset")
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5d.VIRTUAL:
        raise DataError(f"{path}: '{key}' is a virtual dataset (its data is mapped from other files): refused")
    if dcpl.get_external_count() > 0:
        where = dcpl.get_external(0)[0].decode(errors="replace")
        raise DataError(f"{path}: '{key}' uses HDF5 external storage (its bytes live in {where!r}, outside the "
                        f"file): refused")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in BUILTIN_FILTERS:
            raise DataError(f"{path}: '{key}' needs HDF5 filter {code}, which is not built in (HDF5 would load a "
                            f"plugin library for it): refused")
    return ds


def check_allocated(ds, key: str, path) -> None:
    """Refuse a dataset that stores fewer bytes than it declares (unwritten chunks read as fill values)."""
    from h5py import h5d

    n = ds.shape[0] if ds.shape else 0
    if n == 0:
        return
    layout = ds.id.get_create_plist().get_layout()
    if layout == h5d.CHUNKED:
        per_axis = [-(-size // step) for size, step in zip(ds.shape, ds.chunks, strict=True)]
        expected = int(np.prod(per_axis, dtype=np.int64))
        written = ds.id.get_num_chunks()
        if written < expected:
            rows = min(n, written // max(1, expected // per_axis[0]) * ds.chunks[0])
            raise DataError(f"{path}: '{key}' declares {n:,} rows but stores only {written:,} of its {expected:,} "
                            f"chunks (about {rows:,} rows): the rest would read as empty; refused")
    elif layout == h5d.CONTIGUOUS:
        expected = int(np.prod(ds.shape, dtype=np.int64)) * ds.dtype.itemsize
        stored = ds.id.get_storage_size()
        if stored < expected:
            raise DataError(f"{path}: '{key}' declares {n:,} rows but stores {stored:,} of its {expected:,} bytes: "
                            f"the rest would read as empty; refused")


def check_keys(keys: dict | None) -> dict[str, str]:
    """Named keys, ``role -> key`` (roles ``images``, ``y``, ``m0``, ``pt``), checked; ``None`` values dropped.

    Example: ``check_keys({"images": "calo", "y": "is_quark"})`` returns that dict; a key with a
    ``/``, an empty one or one key named for two roles is a one-line :class:`ConfigError`.
    """
    out = {role: key for role, key in (keys or {}).items() if key is not None}
    for role, key in out.items():
        if role not in ROLES:
            raise ConfigError(f"unknown dataset role {role!r} (known: {', '.join(ROLES)})")
        if not isinstance(key, str) or key == "." or not KEY_NAME.fullmatch(key):
            raise ConfigError(f"{ROLE_FLAGS[role]} {key!r}: not a dataset name at the top of an HDF5 file "
                              f"(1-255 characters, no '/', no control characters)")
    by_key: dict[str, str] = {}
    for role, key in out.items():
        if key in by_key:
            raise ConfigError(f"{ROLE_FLAGS[by_key[key]]} and {ROLE_FLAGS[role]} both name '{key}': each role "
                              f"needs its own dataset")
        by_key[key] = role
    return out


def _find_layout(f, path, images_key: str | None = None) -> str:
    """The image key: the one named, else the first public one present."""
    names = set(f.keys())  # link names, listed without following any link
    found = ", ".join(sorted(names)) or "none"
    if images_key is not None:
        if images_key not in names:
            raise DataError(f"{path}: no dataset '{images_key}' (named by --images-key); found keys: {found}")
        stored_inside(f, images_key, path)
        return images_key
    for key in LAYOUTS:
        if key in names:
            stored_inside(f, key, path)
            return key
    raise DataError(f"{path}: no image dataset: expected key 'X_jets' (quark/gluon layout) or 'jet' "
                    f"(8-channel layout), or name yours with --images-key; found keys: {found}")


def inspect_source(path: str | os.PathLike, image_size: int | None = 125, keys: dict | None = None) -> SourceInfo:
    """Check the structure of ``path`` (keys, ranks, sizes, dtypes, lengths) without reading images.

    Args:
        path: HDF5 file.
        image_size: required height and width in pixels; None accepts any square image.
        keys: key names the file uses instead of a public layout's, ``role -> key`` (see
            :func:`check_keys`); a named key must exist, an unnamed one takes the layout's name.
    """
    named = check_keys(keys)
    with open_source(path) as f:
        layout = image_key = _find_layout(f, path, named.get("images"))
        ds = stored_inside(f, image_key, path)
        shape = tuple(ds.shape)
        if len(shape) != 4:
            raise DataError(f"{path}: '{image_key}' has shape {shape}: expected 4 dimensions, "
                            f"(N, H, W, C) or (N, C, H, W)")
        n = shape[0]
        if shape[1] == shape[2] and shape[3] <= MAX_CHANNELS:
            axis, (h, w, c) = "last", shape[1:]
        elif shape[2] == shape[3] and shape[1] <= MAX_CHANNELS:
            axis, (c, h, w) = "first", shape[1:]
        else:
            raise DataError(f"{path}: '{image_key}' has shape {shape}: expected square images with at most "
                            f"{MAX_CHANNELS} channels, (N, H, W, C) or (N, C, H, W)")
        if layout not in LAYOUTS:  # a named image key: the layout its channel count says
            layout = "X_jets" if c == 3 else "jet"
        roles = {**LAYOUTS[layout], "images": image_key, **named}
        if image_size is not None and (h, w) != (image_size, image_size):
            raise DataError(f"{path}: '{image_key}' images are {h}x{w} pixels, expected "
                            f"{image_size}x{image_size}")
        if n == 0:
            raise DataError(f"{path}: '{image_key}' holds 0 jets")
        if ds.dtype.name not in FLOAT_DTYPES:
            raise DataError(f"{path}: '{image_key}' has dtype {ds.dtype.name}, expected one of "
                            f"{', '.join(FLOAT_DTYPES)}")

        names = set(f.keys())
        present = {r: roles[r] for r in SCALAR_ROLES if roles[r] in names}
        for role in SCALAR_ROLES:  # a key the user named must be there, labelled file or not
            if role in named and role not in present:
                raise DataError(f"{path}: no dataset '{named[role]}' (named by {ROLE_FLAGS[role]}); found keys: "
                                f"{', '.join(sorted(names))}")
        if present and len(present) < len(SCALAR_ROLES):
            missing = [roles[r] for r in SCALAR_ROLES if r not in present]
            found = ", ".join(sorted(f.keys()))
            raise DataError(f"{path}: key '{missing[0]}' is missing (layout '{layout}' needs "
                            f"{', '.join(roles[r] for r in SCALAR_ROLES)}, or name yours with --labels-key, "
                            f"--mass-key, --pt-key; found keys: {found})")
        for key in present.values():
            stored_inside(f, key, path)
            s = f[key].shape
            if not (len(s) == 1 or (len(s) == 2 and s[1] == 1)):
                raise DataError(f"{path}: '{key}' has shape {s}, expected ({n},)")
            if s[0] != n:
                raise DataError(f"{path}: '{key}' has {s[0]} entries but '{image_key}' has {n} jets")
            if f[key].dtype.kind not in "biuf":
                raise DataError(f"{path}: '{key}' has dtype {f[key].dtype}, expected numbers")
        others = sorted(names - {image_key})
        if not present and others:  # an unlabelled dataset by choice, or labels under names not given?
            log.warning("%s: no %s: ingesting '%s' as unlabelled (pretraining only); if %s hold the labels, "
                        "mass and pT, name them with --labels-key, --mass-key, --pt-key", path,
                        ", ".join(roles[r] for r in SCALAR_ROLES), image_key, ", ".join(others))
        for key in (image_key, *present.values()):
            check_allocated(f[key], key, path)
        return SourceInfo(
            path=str(path), layout=layout, keys={"images": image_key, **present}, n_jets=n, channels=c,
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
            ds = stored_inside(f, key, info.path)  # checked again: the file may have changed since inspect
            try:
                arr = np.asarray(ds[...]).reshape(-1)
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
                values = arr.astype(np.float64)
                # a mass is >= 0 and a pT > 0; neither can exceed the collision energy
                wrong = (values < 0) | (values > ENERGY_MAX) | ((values == 0) if role == "pt" else False)
                if wrong.any():
                    i = int(np.argmax(wrong))
                    need = "0 < pT" if role == "pt" else "0 <= mass"
                    raise DataError(f"{info.path}: '{key}' has {arr[i].item()} GeV at row {i}: not physical "
                                    f"(need {need} <= {ENERGY_MAX:,.0f} GeV)")
                out[role] = values
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
    key = info.keys["images"]
    ds = stored_inside(f, key, info.path)  # checked again: the file may have changed since inspect
    for start in range(0, info.n_jets, rows):
        stop = min(start + rows, info.n_jets)
        try:
            block = ds[start:stop]
        except OSError:
            raise DataError(f"{info.path}: cannot read '{key}' jets {start}-{stop - 1}: "
                            f"file is truncated or corrupt") from None
        if info.channel_axis == "last":
            block = block.transpose(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        block = np.ascontiguousarray(block)
        finite = np.isfinite(block)
        if not finite.all():
            b, c, i, j = (int(v) for v in np.argwhere(~finite)[0])
            raise DataError(f"{info.path}: '{key}' has {block[b, c, i, j].item()} at jet {start + b} "
                            f"(channel {c}, pixel {i},{j})")
        yield start, block
