"""What the report computes itself from the test split: the data's portrait, mass predictions, activations.

Result files hold summaries; a few figures need per-jet numbers. This module reads the
test split through :class:`~jetlib.data.loader.JetLoader` and rebuilds stored networks with
:func:`jetlib.models.from_blob` (the rebuild path evaluation uses), scored by their task's own
prediction (:mod:`jetlib.tasks`): mean quark and gluon images, mass / pT / occupancy by class,
predicted vs true values of a model (GeV for the mass regressor), and the activations of the
encoder's stages (forward hooks) for a few test jets. Everything
is capped at ``max_jets`` test jets so a report of a big study stays quick on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from jetlib import models, records, tasks
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import Dataset
from jetlib.progress import progress

MAX_JETS = 10_000  # test jets for the data's portrait (reading and averaging is cheap)
PREDICT_JETS = 2_000  # test jets per model drawn: enough for a 2-D histogram, a minute of CPU at most
EXAMPLES_PER_CLASS = 2


@dataclass
class DataPortrait:
    """Test-split jets seen by the report (images in raw units, before normalisation)."""

    jets: int  # jets read
    mean_image: dict[int, np.ndarray]  # class (1 quark, 0 gluon, -1 unlabelled) -> (C, H, W) mean image
    m0: dict[int, np.ndarray]  # class -> (n,) jet mass, GeV
    pt: dict[int, np.ndarray]  # class -> (n,) jet pT, GeV
    occupancy: dict[int, np.ndarray]  # class -> (n,) non-zero pixels per jet (all channels)
    examples: list[tuple[int, np.ndarray]]  # (class, (C, H, W) raw image) for the activation maps


def _batches(ds: Dataset, normalize: str, max_jets: int, desc: str, device: str = "cpu"):
    """(batch, rows of it to use) over the first ``max_jets`` test jets, with a progress bar."""
    loader = JetLoader(ds, "test", batch_size=256, device=device, shuffle=False, normalize=normalize)
    seen = 0
    with progress(total=min(max_jets, loader.rows), desc=desc, unit="jet", leave=False) as bar:
        for batch in loader:
            if seen >= max_jets:
                break
            take = min(len(batch), max_jets - seen)
            seen += take
            bar.update(take)
            yield batch, take


def portrait(ds: Dataset, max_jets: int = MAX_JETS) -> DataPortrait:
    """Mean images and distributions by class over (up to ``max_jets``) test jets."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    m0, pt, occ = {}, {}, {}
    examples: list[tuple[int, np.ndarray]] = []
    jets = 0
    for batch, take in _batches(ds, "none", max_jets, "report: test jets"):
        x = batch.x[:take].numpy()  # (B, C, H, W)
        y = batch.y[:take].numpy() if batch.y is not None else np.full(take, -1)
        jets += take
        for cls in np.unique(y):
            sel = y == cls
            c = int(cls)
            sums[c] = sums.get(c, 0) + x[sel].sum(0)
            counts[c] = counts.get(c, 0) + int(sel.sum())
            occ.setdefault(c, []).append((x[sel] > 0).reshape(int(sel.sum()), -1).sum(1))
            if batch.m0 is not None:
                m0.setdefault(c, []).append(batch.m0[:take].numpy()[sel])
                pt.setdefault(c, []).append(batch.pt[:take].numpy()[sel])
            for i in np.flatnonzero(sel):
                if sum(e[0] == c for e in examples) < EXAMPLES_PER_CLASS:
                    examples.append((c, x[i]))
    cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return DataPortrait(jets, {c: s / counts[c] for c, s in sums.items()}, cat(m0), cat(pt), cat(occ),
                        sorted(examples, key=lambda e: -e[0]))


def load_step_object(uri: str, field: str) -> tuple[dict, dict]:
    """(object, run.json) of a finished step: ``field`` is ``model`` or ``encoder``, verified by sha256."""
    fmt = records.PRETRAIN if field == "encoder" else records.MODEL
    return records.read_run(uri, field, fmt, "report: step")


def predictions(ds: Dataset, model_uri: str, max_jets: int = PREDICT_JETS) -> dict[str, np.ndarray]:
    """{"true", "pred"} of the model at ``model_uri`` on test jets, in its task's units (GeV for the mass)."""
    blob, _ = load_step_object(model_uri, "model")
    net = models.from_blob(blob, f"{model_uri}: model.pt")
    task = tasks.get(blob["task"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(device).eval()
    norm = blob.get("target")
    true, pred = [], []
    with torch.no_grad():
        for batch, take in _batches(ds, blob["normalize"], max_jets, f"report: {blob['mode']} predictions", device):
            pred.append(task.prediction(net(batch.x[:take]), norm).cpu().numpy())
            true.append(task.truth(batch, norm)[:take].float().cpu().numpy())
    return {"true": np.concatenate(true), "pred": np.concatenate(pred)}


def encoder_from(uri: str, pretraining: bool) -> tuple[models.Encoder, str]:
    """(network with its weights, normalisation) from a pretraining run, or else a training run."""
    blob, _ = load_step_object(uri, "encoder" if pretraining else "model")
    return models.from_blob(blob, f"{uri}: {'encoder' if pretraining else 'model'}.pt").eval(), blob["normalize"]


def stage_activations(encoder: models.Encoder, x: np.ndarray, scale: np.ndarray | None) -> dict[str, np.ndarray]:
    """Mean |activation| over channels after each of the encoder's stages (the stem and each residual
    block of a ResNet, :meth:`~jetlib.models.base.Encoder.stages`), by forward hooks.

    Args:
        x: (N, C, H, W) raw test images; ``scale`` (C,) multiplies channels as the encoder's loader did.

    Returns:
        {"stem": (N, h, w), "block1": ..., ...}, each map scaled to [0, 1] per jet.
    """
    maps: dict[str, np.ndarray] = {}
    modules = encoder.stages()

    def hook(name):
        def save(_module, _inp, out):  # out: (N, C', h, w)
            if out.dim() != 4:  # a stage without a spatial map (a pooled or flat output) has no picture
                return
            a = out.detach().abs().mean(1)
            peak = a.flatten(1).max(1).values.clamp_min(1e-12)
            maps[name] = (a / peak[:, None, None]).numpy()
        return save

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        inp = torch.as_tensor(x * (scale[None, :, None, None] if scale is not None else 1.0), dtype=torch.float32)
        with torch.no_grad():
            encoder.forward_features(inp)
    finally:
        for h in handles:
            h.remove()
    return maps
