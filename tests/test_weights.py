"""jetlib.weights: a pretrained encoder loaded into a network that differs from it, every adaptation reported.

The channel adaptation is checked where it matters: a network fed a uniform image gives the same
features after 3 -> 8 (or 3 -> 2) channels as the source network did on its uniform image."""

import pytest
import torch

from jetlib import models
from jetlib.models.resnet import VARIANTS
from jetlib.weights import adapt_input_conv, load_adapted

STEM = "stem.0.weight"
ADAPTED = "input channels (kernels tiled or folded, response to a uniform input kept)"


def tiny_resnet(channels: int, seed: int, **changes) -> models.Encoder:
    torch.manual_seed(seed)
    return models.create("resnet", **{**VARIANTS["tiny"].to_dict(), "in_channels": channels, **changes}).eval()


@pytest.mark.parametrize("channels", [1, 2, 4, 8, 9])
def test_the_adapted_stem_sums_to_the_source_over_channels(channels):
    w = torch.randn(6, 3, 3, 3, dtype=torch.float64)
    out = adapt_input_conv(w, channels)
    assert out.shape == (6, channels, 3, 3)
    torch.testing.assert_close(out.sum(1), w.sum(1))  # the response to a uniform input, kernel by kernel
    assert adapt_input_conv(w, 3) is w  # the same channel count: untouched


@pytest.mark.parametrize("channels", [8, 2])
def test_a_3_channel_encoder_in_another_channel_count_keeps_its_features_of_a_uniform_image(channels):
    src, dst = tiny_resnet(3, seed=0), tiny_resnet(channels, seed=1)
    report = load_adapted(dst, src.state_dict())
    assert report == [f"{STEM}: 3 -> {channels} {ADAPTED}"]  # the one line, and nothing else differs
    theirs, mine = src.state_dict(), dst.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs if k != STEM)
    assert torch.equal(mine[STEM], adapt_input_conv(theirs[STEM], channels))
    with torch.no_grad():  # (1, C, 24, 24) of 0.7 everywhere -> (1, 16) features
        torch.testing.assert_close(dst.forward_features(torch.full((1, channels, 24, 24), 0.7)),
                                   src.forward_features(torch.full((1, 3, 24, 24), 0.7)))


def test_matching_weights_load_bit_for_bit_with_an_empty_report():
    src, dst = tiny_resnet(3, seed=0), tiny_resnet(3, seed=1)
    assert load_adapted(dst, src.state_dict()) == []
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())


def test_other_mismatches_stay_at_random_init_and_missing_or_extra_keys_are_listed():
    src = tiny_resnet(3, seed=0)
    dst = tiny_resnet(3, seed=1, stem_width=8)  # the stem has 8 kernels, not 4: nothing to tile
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    state = dict(src.state_dict())
    dropped = next(k for k in state if k.startswith("blocks.6."))
    del state[dropped]
    state["projector.0.weight"] = torch.zeros(2, 2)
    report = load_adapted(dst, state)
    assert f"{STEM}: shape (4, 3, 3, 3) vs (8, 3, 3, 3), left at random init" in report
    # one line per tensor of another shape, per key missing from the weights, per key the network lacks
    differ = [k for k in state if k in before and state[k].shape != before[k].shape]
    missing = [k for k in before if k not in state]
    assert dropped in missing and len(differ) > 1  # the wider stem changes its norm and the first block too
    assert sorted(report) == sorted(
        [f"{k}: shape {tuple(state[k].shape)} vs {tuple(before[k].shape)}, left at random init" for k in differ]
        + [f"{k}: not in the pretrained weights, left at random init" for k in missing]
        + ["projector.0.weight: not in this network, ignored"])
    after = dst.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in differ + missing)  # untouched
    loaded = [k for k in state if k in before and state[k].shape == before[k].shape]
    assert loaded and all(torch.equal(after[k], state[k]) for k in loaded)  # the rest did load


def test_a_network_that_names_no_input_convolution_adapts_nothing():
    """VGG's ``first_conv`` is None: its first convolution at another channel count is left at random init."""
    small = {"widths": (4, 8), "depths": (1, 1), "heads": 1, "head_hidden": 4}
    src, dst = models.create("vgg", in_channels=3, **small), models.create("vgg", in_channels=8, **small)
    assert dst.first_conv is None
    before = dst.state_dict()["features.0.weight"].clone()
    report = load_adapted(dst, src.state_dict())
    assert report == ["features.0.weight: shape (4, 3, 3, 3) vs (4, 8, 3, 3), left at random init"]
    assert torch.equal(dst.state_dict()["features.0.weight"], before)
