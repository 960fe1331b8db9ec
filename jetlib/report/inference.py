"""What the report computes itself from the test split: the data's portrait, mass predictions, activations.

Result files hold summaries; a few figures need per-jet numbers. This module reads the
test split through :class:`~jetlib.data.loader.JetLoader` and rebuilds stored networks from
:mod:`jetlib.models` alone (it never imports the training steps): mean quark and gluon
images, mass / pT / occupancy by class, predicted vs true mass of a regression model, and
the activations of the encoder's stages (forward hooks) for a few test jets. Everything
is capped at ``max_jets`` test jets so a report of a big study stays quick on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from jetlib.checkpoint import read_run
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import Dataset
from jetlib.errors import ConfigError
from jetlib.models.heads import ClassifierHead, RegressionHead
from jetlib.models.resnet import ResNet, ResNetConfig
from jetlib.progress import progress
from jetlib.report.collect import MODEL_FORMAT, PRETRAIN_FORMAT

MAX_JETS = 10_000  # test jets for the data's portrait (reading and averaging is cheap)
PREDICT_JETS = 2_000  # test jets per regression model: enough for a 2-D histogram, a minute of CPU at most
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
    formats = (PRETRAIN_FORMAT,) if field == "encoder" else (MODEL_FORMAT,)
    return read_run(uri, field, formats=formats, flag="report: step")


class _Supervised(nn.Module):
    """Encoder + head with the parameter names of a fine-tuning ``model.pt`` (``encoder.*``, ``head.*``)."""

    def __init__(self, blob: dict):
        super().__init__()
        self.encoder = ResNet(ResNetConfig.from_dict(blob["encoder_config"]))
        h = blob["head"]
        dim = self.encoder.num_features
        self.head = (ClassifierHead(dim, h["hidden"], dropout=h["dropout"]) if blob["task"] == "cls"
                     else RegressionHead(dim, h["hidden"], depth=h["depth"]))

    def forward(self, x):
        return self.head(self.encoder.forward_features(x))


def predict_mass(ds: Dataset, model_uri: str, max_jets: int = PREDICT_JETS) -> dict[str, np.ndarray]:
    """{"true", "pred"} masses in GeV of the regression model at ``model_uri`` on test jets."""
    blob, _ = load_step_object(model_uri, "model")
    if blob.get("kind") != "resnet" or blob.get("task") != "reg":
        raise ConfigError(f"{model_uri} is not a mass-regression model")
    net = _Supervised(blob)
    net.load_state_dict(blob["state_dict"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(device).eval()
    mean, std = blob["target"]["mean"], blob["target"]["std"]
    true, pred = [], []
    with torch.no_grad():
        for batch, take in _batches(ds, blob["normalize"], max_jets, f"report: {blob['mode']} masses", device):
            out = net(batch.x[:take])[-1].float()  # the last depth is the reported prediction
            pred.append((out * std + mean).cpu().numpy())
            true.append(batch.m0[:take].cpu().numpy())
    return {"true": np.concatenate(true), "pred": np.concatenate(pred)}


def encoder_from(uri: str, pretraining: bool) -> tuple[ResNet, str]:
    """(encoder with its weights, normalisation) from a pretraining run, or else a fine-tuning/scratch run."""
    if pretraining:
        blob, _ = load_step_object(uri, "encoder")
        enc = ResNet(ResNetConfig.from_dict(blob["config"]))
        enc.load_state_dict(blob["state_dict"])
    else:
        blob, _ = load_step_object(uri, "model")
        if blob.get("kind") != "resnet":
            raise ConfigError(f"{uri} holds no ResNet encoder")
        enc = ResNet(ResNetConfig.from_dict(blob["encoder_config"]))
        enc.load_state_dict({k.removeprefix("encoder."): v for k, v in blob["state_dict"].items()
                             if k.startswith("encoder.")})
    return enc.eval(), blob["normalize"]


def stage_activations(encoder: ResNet, x: np.ndarray, scale: np.ndarray | None) -> dict[str, np.ndarray]:
    """Mean |activation| over channels after the stem and each residual block, by forward hooks.

    Args:
        x: (N, C, H, W) raw test images; ``scale`` (C,) multiplies channels as the encoder's loader did.

    Returns:
        {"stem": (N, h, w), "block1": ..., ...}, each map scaled to [0, 1] per jet.
    """
    maps: dict[str, np.ndarray] = {}
    modules = {"stem": encoder.stem, **{f"block{i + 1}": b for i, b in enumerate(encoder.blocks)}}

    def hook(name):
        def save(_module, _inp, out):  # out: (N, C', h, w)
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
