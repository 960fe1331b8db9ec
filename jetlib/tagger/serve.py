"""``jetlib serve``: the exported tagger as a KServe model server (Open Inference Protocol v2).

A :class:`kserve.Model` with ONNX Runtime inside, started by :class:`kserve.ModelServer`, which
provides the endpoints: ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/<name>`` (its
metadata), ``/v2/models/<name>/ready``, ``/v2/models/<name>/infer``, and the v1 ones
(``/v1/models``, ``/v1/models/<name>:predict`` with ``{"instances": [jet, ...]}``). ``--model``
is a folder ``jetlib export`` wrote (local or ``s3://``, read with the store's credentials).

A v2 request sends jets one of two ways:

``jets``  (dense)  FP32, shape ``[B, C, H, W]``: raw pixel energies, what the HDF5 file holds.
``index``, ``value``, ``counts`` (sparse, the store's form): ``index`` INT32/INT64 ``[nnz]``,
          each non-zero pixel's flat position ``c*H*W + i*W + j``; ``value`` FP32 ``[nnz]``, its
          energy; ``counts`` INT32/INT64 ``[B]``, how many of them belong to each jet, in order.
          A 1%-occupied 3x125x125 jet is ~470 pixels (about 4 KB) instead of 187 KB.

The answer is one FP32 output ``[B]`` named as the model's output column (``p_quark`` or
``mass_pred_gev``). A request that is not that (unknown input names, a wrong shape or type, a
non-finite value, an index outside the image, counts that do not add up, more than
``--max-batch`` jets) is answered 400 with one line saying what is wrong; malformed JSON is
answered 4xx by the server before the model sees it. Either way the server keeps serving.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from jetlib.tagger.export import INPUT, load_export

log = logging.getLogger(__name__)
MAX_BATCH = 256  # jets per request: 256 dense jets are ~48 MB of float32, several times that as JSON
SPARSE = ("index", "value", "counts")


def _kserve():
    """Import kserve without letting it read our command line: ``kserve.model_server`` parses
    ``sys.argv`` at import (``parser.parse_known_args()``), where ``--model`` would abbreviate its
    ``--model_name``."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve
    finally:
        sys.argv = argv
    return kserve


def densify(index: np.ndarray, value: np.ndarray, counts: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(B, C, H, W) float32 from the sparse form, every part checked; raises ValueError with one line."""
    size = int(np.prod(shape))
    if index.ndim != 1 or value.ndim != 1 or counts.ndim != 1:
        raise ValueError("'index', 'value' and 'counts' must each be one-dimensional")
    if len(index) != len(value):
        raise ValueError(f"'index' has {len(index)} entries but 'value' has {len(value)}")
    if (counts < 0).any() or int(counts.sum()) != len(index):
        raise ValueError(f"'counts' must be non-negative and add up to the {len(index)} entries of 'index', "
                         f"not {int(counts.sum())}")
    bad = (index < 0) | (index >= size)
    if bad.any():
        raise ValueError(f"'index' has {int(index[bad][0])}: outside the image (0 to {size - 1}, c*H*W + i*W + j)")
    row = np.repeat(np.arange(len(counts)), counts)
    x = np.zeros((len(counts), size), np.float32)
    np.add.at(x, (row, index.astype(np.int64)), value.astype(np.float32))  # a repeated index adds, as in an image
    return x.reshape(len(counts), *shape)


def check_jets(x: np.ndarray, shape: tuple[int, int, int], max_batch: int) -> np.ndarray:
    """``x`` as contiguous float32 (B, C, H, W), or ValueError naming what is wrong."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"jets have shape {list(x.shape)}, expected [batch, {', '.join(map(str, shape))}]")
    if x.shape[0] < 1:
        raise ValueError("no jets in the request")
    if x.shape[0] > max_batch:
        raise ValueError(f"{x.shape[0]} jets in one request, more than the server's limit of {max_batch}: "
                         f"split the batch")
    finite = np.isfinite(x)
    if not finite.all():
        b, c, i, j = (int(v) for v in np.argwhere(~finite)[0])
        raise ValueError(f"jet {b} has {x[b, c, i, j]} at channel {c}, pixel {i},{j}: pixels must be finite")
    return np.ascontiguousarray(x, dtype=np.float32)


def _array(tensor) -> np.ndarray:
    """An input's data as an array of its declared shape and type, or ValueError naming the input."""
    try:
        return tensor.as_numpy()
    except (ValueError, TypeError) as e:
        raise ValueError(f"input '{tensor.name}' (shape {list(tensor.shape)}, {tensor.datatype}): "
                         f"{str(e).splitlines()[0]}") from None


def make_model(folder: str, name: str = "jet-tagger", max_batch: int = MAX_BATCH, threads: int = 1):
    """The KServe model for the export at ``folder``, loaded (ready)."""
    kserve = _kserve()
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class JetTagger(kserve.Model):
        """ONNX Runtime over an exported jetlib tagger."""

        def __init__(self):
            super().__init__(name)
            self.exported = None
            self.load()
            self.shape = self.exported.image_shape
            self.output = self.exported.column

        def load(self) -> bool:
            self.exported = load_export(folder, threads)  # the graph checked against its card's sha256
            self.session = self.exported.session
            self.ready = True
            return True

        def get_input_types(self) -> list[dict]:  # /v2/models/<name>: the dense form (sparse: module docstring)
            return [{"name": INPUT, "datatype": "FP32", "shape": [-1, *self.shape]}]

        def get_output_types(self) -> list[dict]:
            return [{"name": self.output, "datatype": "FP32", "shape": [-1]}]

        def _jets(self, payload) -> np.ndarray:
            try:
                if isinstance(payload, InferRequest):
                    given = {i.name: i for i in payload.inputs}
                    if set(given) == {INPUT}:
                        x = _array(given[INPUT])
                        if x.dtype != np.float32:
                            raise ValueError(f"'{INPUT}' is {given[INPUT].datatype}, expected FP32")
                    elif set(given) == set(SPARSE):
                        parts = [_array(given[k]) for k in SPARSE]
                        if parts[0].dtype.kind not in "iu" or parts[2].dtype.kind not in "iu":
                            raise ValueError("'index' and 'counts' must be INT32 or INT64")
                        if len(parts[2]) > max_batch:
                            raise ValueError(f"{len(parts[2])} jets in one request, more than the server's limit "
                                             f"of {max_batch}: split the batch")
                        if not np.isfinite(parts[1]).all():
                            raise ValueError("'value' holds a non-finite number: pixels must be finite")
                        x = densify(*parts, self.shape)
                    else:
                        raise ValueError(f"inputs {sorted(given)}: expected '{INPUT}' (dense, FP32 [batch, "
                                         f"{', '.join(map(str, self.shape))}]) or 'index', 'value', 'counts' "
                                         f"(sparse)")
                else:  # v1: {"instances": [jet, ...]}, each jet a nested C x H x W list
                    x = np.asarray(payload.get("instances") if isinstance(payload, dict) else None, np.float32)
                return check_jets(x, self.shape, max_batch)
            except InvalidInput:
                raise
            except (ValueError, TypeError) as e:  # reshape, dtype and our checks: the client's request
                raise InvalidInput(str(e).splitlines()[0] if str(e) else type(e).__name__) from None

        def predict(self, payload, headers=None):
            x = self._jets(payload)
            y = self.session.run(None, {INPUT: x})[0].astype(np.float32)  # (B,)
            if isinstance(payload, InferRequest):
                out = InferOutput(name=self.output, shape=[len(y)], datatype="FP32", data=y.tolist())
                return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out])
            return {"predictions": y.tolist()}

    return JetTagger()


def serve(folder: str, http_port: int, name: str = "jet-tagger", max_batch: int = MAX_BATCH,
          grpc_port: int | None = None, threads: int = 1) -> None:
    """Serve until SIGTERM or SIGINT (blocks). gRPC is off unless ``grpc_port`` is given."""
    kserve = _kserve()
    model = make_model(folder, name, max_batch, threads)
    log.info("serving %s (%s) on http://0.0.0.0:%d/v2/models/%s", folder, model.output, http_port, name)
    server = kserve.ModelServer(http_port=http_port, grpc_port=grpc_port or 8081, enable_grpc=grpc_port is not None,
                                workers=1)
    server.start([model])

