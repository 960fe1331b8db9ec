"""Loading pretrained encoder weights into a network that may not match them exactly.

A pretrained encoder is reused where a mapping makes sense, and every adaptation is
reported, never silent:

* the input convolution (the network's ``first_conv``, as timm's ``pretrained_cfg`` names it; ResNet's
  stem) adapts to another input channel count (e.g. a 3-channel
  Tracks/ECAL/HCAL encoder on the 8-channel layout): the kernels are tiled over the
  new channels (or folded onto fewer) and rescaled so that a uniform input gives
  the same response (as timm's ``adapt_input_conv`` intends);
* any other tensor whose shape differs stays at its random initialisation;
* keys missing on either side are listed.
"""

from __future__ import annotations

import torch
from torch import nn

STEM_KEY = "stem.0.weight"  # where a network names no first_conv


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(out, C_src, k, k) -> (out, in_channels, k, k), keeping the response to a uniform input.

    More channels: new channel ``c`` copies source channel ``c % C_src``, divided by the number of
    copies that source channel gets. Fewer channels: source channel ``s`` is added into ``s % C_dst``.
    """
    c_src = weight.shape[1]
    if c_src == in_channels:
        return weight
    if in_channels > c_src:
        src = torch.arange(in_channels) % c_src
        copies = torch.bincount(src, minlength=c_src).to(weight.dtype)
        return weight[:, src] / copies[src].view(1, -1, 1, 1)
    out = weight.new_zeros(weight.shape[0], in_channels, *weight.shape[2:])
    return out.index_add_(1, torch.arange(c_src) % in_channels, weight)


def load_adapted(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load ``state`` into ``model`` where shapes allow; returns one line per adaptation made."""
    own = model.state_dict()
    first = getattr(model, "first_conv", STEM_KEY)
    report, loadable = [], {}
    for key, value in state.items():
        if key not in own:
            report.append(f"{key}: not in this network, ignored")
        elif value.shape == own[key].shape:
            loadable[key] = value
        elif key == first and value.ndim == 4 and value.shape[0] == own[key].shape[0]:
            loadable[key] = adapt_input_conv(value, own[key].shape[1])
            report.append(f"{key}: {value.shape[1]} -> {own[key].shape[1]} input channels (kernels tiled or "
                          f"folded, response to a uniform input kept)")
        else:
            report.append(f"{key}: shape {tuple(value.shape)} vs {tuple(own[key].shape)}, left at random init")
    for key in own:
        if key not in state:
            report.append(f"{key}: not in the pretrained weights, left at random init")
    model.load_state_dict(loadable, strict=False)
    return report
