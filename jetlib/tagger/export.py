"""``jetlib export``: a trained model as ``model.onnx`` plus its model card, for software that never heard of jetlib.

The graph is the whole :class:`~jetlib.tagger.load.Tagger`: its input ``jets`` is what the
HDF5 file holds, raw pixel energies ``(batch, C, H, W)`` float32 (``(batch, 3, 125, 125)`` for the
quark/gluon layout, channels in the file's order: Tracks, ECAL, HCAL), the train-split
normalisation is inside, and its output is the task's prediction, ``(batch,)``: the quark
probability (``p_quark``, label 1 = quark) or the jet mass in GeV (``mass_pred_gev``).

The exporter is ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` then onnxscript) at the
pinned :data:`OPSET`, with a dynamic batch axis. The classic TorchScript exporter gives the same
numbers here but is deprecated at this torch version. Every export is checked before the card is
written: ONNX Runtime (CPU) and torch on up to :data:`PARITY_JETS` test jets must agree to
:data:`TOLERANCE` (1e-4 in probability, 1e-3 GeV: ten times float32's rounding between the two), and the
measured difference goes into the card.

Files go to ``DIR`` (a local folder or ``s3://``): ``model.onnx``, then ``model_card.md``, then
``model_card.json`` last; a folder with the JSON card is a finished export.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jetlib import tasks
from jetlib.data.loader import JetLoader
from jetlib.data.store import open_store
from jetlib.errors import ConfigError, DataError, JetlibError, TrainingError
from jetlib.evaluate import evaluate
from jetlib.tagger.card import build_card, card_markdown
from jetlib.tagger.load import Loaded, load

log = logging.getLogger(__name__)
OPSET = 18  # pinned: every ONNX Runtime since 1.14 runs it (CMSSW's included)
INPUT = "jets"
PARITY_JETS = 256
# The export refuses a graph that differs from torch by more than this, per output column (another task's:
# 1e-4): ten times the float32 rounding measured between ONNX Runtime and torch (1e-5 in probability and
# 1e-4 GeV on the tests' networks; 1.04e-5 for the demo's cpu-preset ResNet-15), so a wrong graph is caught
# and rounding is not. The measured difference goes into the card.
TOLERANCE = {"p_quark": 1e-4, "mass_pred_gev": 1e-3}
CARD_JSON, CARD_MD, ONNX = "model_card.json", "model_card.md", "model.onnx"


def to_onnx(m: Loaded, path: str | Path) -> None:
    """Write the tagger as an ONNX graph with a dynamic batch axis."""
    c, h, w = m.image_shape
    example = torch.zeros(2, c, h, w)
    tagger = m.tagger.cpu().eval()
    for name in ("onnxscript", "onnx_ir"):  # the exporter's optimiser logs every pass at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.onnx.export(tagger, (example,), str(path), input_names=[INPUT], output_names=[m.column],
                      opset_version=OPSET, dynamo=True, verbose=False, external_data=False,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1 << 20)}})


def session(path: str | Path, threads: int = 1):
    """An ONNX Runtime CPU session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # warnings about unused initialisers are not the user's business
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def parity(m: Loaded, sess, jets: int = PARITY_JETS) -> dict:
    """ONNX Runtime vs torch on the first ``jets`` test jets (raw energies): the largest difference."""
    loader = JetLoader(m.dataset, "test", batch_size=128, shuffle=False, normalize="none")
    worst, seen = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            x = batch.x[: jets - seen]
            a = sess.run(None, {INPUT: x.numpy()})[0]
            b = m.tagger.cpu()(x).numpy()
            worst = max(worst, float(np.abs(a - b).max()))
            seen += len(x)
            if seen >= jets:
                break
    tol = TOLERANCE.get(m.column, 1e-4)
    if not worst <= tol:
        raise TrainingError(f"the ONNX graph of {m.uri} differs from torch by {worst:.3g} on {seen} test jets "
                            f"(tolerance {tol:g}): not exported")
    return {"jets": seen, "max_abs_diff": worst, "tolerance": tol}


def export(model: str, out: str, data: str | None = None, test_metrics: dict | None = None) -> dict:
    """Export the model at ``model`` into the folder ``out``; returns the card (as written to JSON).

    Args:
        data: the training dataset, if it moved.
        test_metrics: the model's ``jetlib evaluate`` result when the caller has it; else it is scored here.
    """
    m = load(model, data)
    if test_metrics is None:
        test_metrics = evaluate(m.dataset, m.uri, None, device="cpu")
    store = open_store(out)
    store.check_writable()
    with tempfile.TemporaryDirectory(prefix="jetlib-export-") as tmp:
        path = Path(tmp) / ONNX
        to_onnx(m, path)
        check = parity(m, session(path))
        data_bytes = path.read_bytes()
        card = build_card(m, test_metrics, check, hashlib.sha256(data_bytes).hexdigest(), OPSET, INPUT)
        store.put_bytes(ONNX, data_bytes)
    store.put_bytes(CARD_MD, card_markdown(card).encode())
    text = json.dumps(card, indent=1, allow_nan=False)
    store.put_bytes(CARD_JSON, text.encode())  # last: the export is done
    log.info("exported %s -> %s (ONNX vs torch: %.2g on %d test jets)", m.uri, store.uri, check["max_abs_diff"],
             check["jets"])
    return json.loads(text)  # the card as written (tuples are lists in JSON)


@dataclass
class Exported:
    """What ``jetlib export`` wrote, loaded for ONNX Runtime: ``predict`` takes it like a training folder."""

    uri: str
    card: dict
    session: object

    @property
    def task(self) -> tasks.Task:
        return tasks.get(self.card["task"]["name"])

    @property
    def column(self) -> str:
        return self.card["onnx"]["output"]["name"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.card["onnx"]["input"]["shape"][1:])

    @property
    def sha256(self) -> str:
        return self.card["onnx"]["sha256"]

    def runner(self, device=None, autocast=None):
        """``run(x) -> (B,) float32 array`` for raw (B, C, H, W) float32 CPU tensors (ONNX Runtime, CPU)."""
        return lambda x: self.session.run(None, {INPUT: x.numpy()})[0].astype(np.float32)


def is_export(folder: str) -> bool:
    """Whether ``folder`` holds a finished export (its JSON card)."""
    try:
        return open_store(folder).exists(CARD_JSON)
    except JetlibError:
        return False


def load_export(folder: str, threads: int = 1) -> Exported:
    """The export at ``folder`` with an ONNX Runtime session; its model file checked against the card's sha256."""
    card = read_card(folder)
    data = open_store(folder).get_bytes(ONNX)
    if hashlib.sha256(data).hexdigest() != card["onnx"].get("sha256"):
        raise DataError(f"--model {folder}: {ONNX} does not match the sha256 its card records: refused")
    with tempfile.TemporaryDirectory(prefix="jetlib-onnx-") as tmp:
        path = Path(tmp) / ONNX
        path.write_bytes(data)  # ONNX Runtime reads a path; the session holds the graph once built
        sess = session(path, threads)
    return Exported(folder, card, sess)


def read_card(folder: str) -> dict:
    """The JSON card of a finished export (``jetlib serve`` reads it for the input's shape and name)."""
    from jetlib.records import read_json

    try:
        card = read_json(open_store(folder), CARD_JSON)
    except Exception as e:  # NotFound, unreadable: one line
        raise ConfigError(f"--model {folder}: no {CARD_JSON} there ({e}); point it at what jetlib export wrote") \
            from None
    if not isinstance(card, dict) or not isinstance(card.get("onnx"), dict):
        raise ConfigError(f"--model {folder}: {CARD_JSON} is not a card jetlib export wrote")
    return card
