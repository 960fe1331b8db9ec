"""``jetlib predict``: run a trained tagger over new jets and write one row per jet to Parquet.

The input is either an HDF5 file in one of the public layouts (labels optional), checked and
streamed by :mod:`jetlib.data.schema` exactly as ingest reads it (external storage, links, virtual
datasets, NaN, wrong shapes refused in one line; one block of about 64 MB in memory at a time,
so a 30 GB file is never loaded whole), or a committed dataset's split (``--split``), read by
:class:`~jetlib.data.loader.JetLoader` and scored by the task's own prediction
(:meth:`jetlib.tasks.task.Task.predict`), the very call ``jetlib evaluate`` makes: on the test
split the numbers are evaluate's.

The Parquet file holds, per jet: ``row`` (its row in the file, or its source row for a
dataset), the prediction (``p_quark``, the quark probability with label 1 = quark, or
``mass_pred_gev``), and ``y`` and ``m0`` (and a file's ``pt``) where the input has them. Its key-value
metadata: ``jetlib.model_sha256``, ``jetlib.input_sha256`` (the HDF5 file's, or for a dataset
the file it was ingested from), ``jetlib.version``, the task and the inputs' URIs. It is written
to a temporary name and renamed (or uploaded, for ``s3://``) when complete: nothing half-written.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from jetlib import __version__
from jetlib.data import schema
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import open_dataset
from jetlib.data.splits import SPLITS
from jetlib.data.store import open_store, sha256_file
from jetlib.device import inference_autocast, setup_device
from jetlib.errors import ConfigError, DataError
from jetlib.progress import progress
from jetlib.tagger.export import Exported, is_export, load_export
from jetlib.tagger.load import Loaded, load

log = logging.getLogger(__name__)
DATASET_SCALARS = ("y", "m0")  # a dataset split's truth columns (an HDF5 file's: y, m0 and pt)


class _ScoreWriter:
    """Row groups appended to a temporary Parquet file, moved into place by :meth:`commit`."""

    def __init__(self, out: str, column: str, scalars: tuple[str, ...], metadata: dict):
        import pyarrow as pa

        self.out, self.column = str(out), column
        fields = [pa.field("row", pa.int64()), pa.field(column, pa.float32())]
        fields += [pa.field(k, pa.int8() if k == "y" else pa.float64()) for k in scalars]
        meta = {f"jetlib.{k}".encode(): str(v).encode() for k, v in metadata.items()}
        self.schema = pa.schema(fields, metadata=meta)
        remote = "://" in self.out
        folder = tempfile.gettempdir() if remote else (os.path.dirname(os.path.abspath(self.out)) or ".")
        if not remote and not os.path.isdir(folder):
            raise ConfigError(f"--out {self.out}: folder {folder} does not exist")
        fd, self.tmp = tempfile.mkstemp(prefix=".scores-", suffix=".parquet.part", dir=folder)
        os.close(fd)
        self.writer = None
        self.rows = 0

    def write(self, row: np.ndarray, pred: np.ndarray, scalars: dict) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        cols = {"row": row.astype(np.int64), self.column: pred.astype(np.float32)}
        cols.update({k: np.asarray(v).astype(self.schema.field(k).type.to_pandas_dtype()) for k, v in scalars.items()})
        self.writer.write_table(pa.Table.from_pydict(cols, schema=self.schema))
        self.rows += len(row)

    def commit(self) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:  # no jets: an empty file with the schema
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.writer.close()
        if "://" in self.out:
            parent, name = self.out.rstrip("/").rsplit("/", 1)
            open_store(parent).put_file(name, self.tmp)
            os.unlink(self.tmp)
        else:
            os.replace(self.tmp, self.out)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        Path(self.tmp).unlink(missing_ok=True)


def _metadata(m, input_uri: str, input_sha: str) -> dict:
    return {"model_sha256": m.sha256, "input_sha256": input_sha, "version": __version__, "task": m.task.name,
            "model": m.uri, "input": input_uri, "column": m.column,
            "runtime": "onnxruntime" if isinstance(m, Exported) else "torch"}


def _physical(info: schema.SourceInfo, start: int, block: np.ndarray) -> None:
    """Ingest's ceiling on pixel values: above the collision energy, or negative energies, is not a jet."""
    bad = block > schema.ENERGY_MAX
    if info.layout == "X_jets":  # Tracks, ECAL and HCAL are energies
        bad |= block < 0
    if bad.any():
        b, c, i, j = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"{info.path}: '{info.layout}' has {block[b, c, i, j].item():g} at jet {start + b} "
                        f"(channel {c}, pixel {i},{j}): not a physical energy; refused")


def _from_file(m, source: str, writer_for, run, batch_size: int, keys: dict | None):
    info = schema.inspect_source(source, image_size=None, keys=keys)
    want = m.image_shape
    if (info.channels, info.height, info.width) != want:
        raise DataError(f"{source}: '{info.layout}' images are {info.channels}x{info.height}x{info.width} "
                        f"(channels x height x width); the model takes {want[0]}x{want[1]}x{want[2]}")
    scalars = schema.read_scalars(info)  # N values each, validated; empty when unlabelled
    with progress(total=os.path.getsize(source), desc="sha256", unit="B", unit_scale=True) as bar:
        sha = sha256_file(source, bar=bar)
    writer = writer_for(sha, tuple(scalars))
    preds = []
    try:
        with schema.open_source(source) as f, progress(total=info.n_jets, desc="predict", unit="jet") as bar:
            for start, block in schema.iter_blocks(f, info, schema.block_rows(info)):  # (B, C, H, W), finite
                _physical(info, start, block)
                x = torch.from_numpy(block.astype(np.float32, copy=False))
                pred = np.concatenate([run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
                rows = np.arange(start, start + len(block))
                writer.write(rows, pred, {k: v[rows] for k, v in scalars.items()})
                preds.append(pred)
                bar.update(len(block))
    except BaseException:
        writer.abort()
        raise
    pred = np.concatenate(preds) if preds else np.zeros(0, np.float32)
    truth = scalars.get(m.task.truth_key) if m.task.truth_key else None
    return {"out": pred, "truth": truth}, writer


def _from_dataset(m, uri: str, split: str, writer_for, run, batch_size: int, dev, autocast):
    ds = open_dataset(uri)
    if tuple(ds.image_shape) != m.image_shape:
        raise DataError(f"{ds.uri}: images are {'x'.join(map(str, ds.image_shape))}; the model takes "
                        f"{'x'.join(map(str, m.image_shape))}")
    task = m.task
    writer = writer_for(ds.manifest["source"].get("sha256", ""), DATASET_SCALARS if ds.labelled else ())
    try:
        if isinstance(m, Loaded) and ds.labelled and ds.manifest["id"] == m.dataset.manifest["id"]:
            # the training dataset: its loader normalises, and the task scores, exactly as jetlib evaluate does
            loader = JetLoader(ds, split, batch_size=batch_size, device=dev, shuffle=False,
                               normalize=m.blob["normalize"])
            p = task.predict(m.tagger.net.to(dev), loader, autocast, m.blob.get("target"))
            batches = [(p["jet"], p["out"], {k: p[k] for k in DATASET_SCALARS})]
        else:  # raw energies (another dataset's loader would divide by its own std): the model normalises
            loader = JetLoader(ds, split, batch_size=batch_size, shuffle=False, normalize="none")
            batches = ((b.jet.numpy(), run(b.x), {k: getattr(b, k).numpy() for k in DATASET_SCALARS}
                        if ds.labelled else {}) for b in loader)
        preds, truths = [], []
        for rows, pred, scalars in batches:
            writer.write(np.asarray(rows), np.asarray(pred), scalars)
            preds.append(np.asarray(pred))
            if ds.labelled and task.truth_key in scalars:
                truths.append(np.asarray(scalars[task.truth_key]))
    except BaseException:
        writer.abort()
        raise
    pred = np.concatenate(preds) if preds else np.zeros(0, np.float32)
    return {"out": pred, "truth": np.concatenate(truths) if truths else None}, writer


def predict(model: str, source: str, out: str, split: str | None = None, data: str | None = None,
            device: str = "cpu", batch_size: int = 256, keys: dict | None = None) -> dict:
    """Score every jet of ``source`` with the model at ``model``; write ``out``; returns a summary.

    Args:
        model: a training step's folder or its ``model.pt``, local or ``s3://``; or a folder ``jetlib export``
            wrote, run by ONNX Runtime on the CPU.
        source: an HDF5 file, or with ``split`` a dataset URI.
        out: the Parquet file (a local path or ``s3://``).
        data: the model's training dataset, if it moved (see :func:`jetlib.tagger.load.load`).
        keys: an HDF5 file's own dataset names, ``role -> key`` (as ``jetlib ingest --images-key ...``;
            :func:`jetlib.data.schema.check_keys`).

    Returns:
        ``{"out", "jets", "task", "column"}`` plus, with labels, the task's scores (``roc_auc``,
        ``mae``, ...: :meth:`~jetlib.tasks.task.Task.test_metrics` restricted to the task's keys).
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    is_file = os.path.isfile(source)
    if split is None and not is_file:
        raise DataError(f"{source}: no such file (a dataset URI needs --split {'|'.join(SPLITS)})")
    if split is not None and is_file:
        raise ConfigError(f"--split {split} is for a dataset URI; {source} is a file")
    if split is not None and any((keys or {}).values()):
        raise ConfigError("--images-key and the other key flags are for an HDF5 file; a dataset URI has its keys")
    m = load_export(model) if is_export(model) else load(model, data)
    dev = setup_device(device) if isinstance(m, Loaded) else torch.device("cpu")  # ONNX Runtime: the CPU
    autocast = inference_autocast(dev, m.run["config"].get("amp", "auto")) if isinstance(m, Loaded) else None
    run = m.runner(dev, autocast)
    input_uri = source if split is None else f"{source}#{split}"

    def writer_for(sha: str, scalars: tuple[str, ...]) -> _ScoreWriter:
        return _ScoreWriter(out, m.column, scalars, _metadata(m, input_uri, sha))

    if split is None:
        p, writer = _from_file(m, source, writer_for, run, batch_size, keys)
    else:
        p, writer = _from_dataset(m, source, split, writer_for, run, batch_size, dev, autocast)
    writer.commit()
    summary = {"out": str(out), "jets": writer.rows, "task": m.task.name, "column": m.column}
    if p["truth"] is not None and len(p["out"]):
        metrics = m.task.test_metrics({"truth": np.asarray(p["truth"]), "out": p["out"]})
        summary.update({k: metrics.get(k) for k in m.task.keys})
    log.info("predict: %d jets -> %s", writer.rows, out)
    return summary
