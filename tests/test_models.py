import pytest
import torch
from torch import nn

from jetlib.models import ResNetConfig, resnet15
from jetlib.models.heads import ProjectionHead


def test_resnet15_has_fifteen_weighted_layers_and_width_512():
    m = resnet15()
    convs = [mod for name, mod in m.named_modules() if isinstance(mod, nn.Conv2d) and "shortcut" not in name]
    assert len(convs) == 15 == m.weighted_layers()
    assert m.num_features == 512 and list(m.cfg.widths) == sorted(m.cfg.widths)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    assert sum(isinstance(mod, nn.GroupNorm) for mod in m.modules()) >= 15
    assert any(isinstance(mod, nn.Dropout2d) for mod in m.modules())


@pytest.mark.parametrize("channels", [1, 3, 8])
def test_any_channel_count_in_and_features_out(channels):
    m = resnet15(in_channels=channels, stem_width=4, widths=(4, 8, 8), strides=(1, 2, 2), groups=2).eval()
    assert m.stem[0].in_channels == channels
    x = torch.randn(3, channels, 125, 125)
    f = m.forward_features(x)
    assert f.shape == (3, 8) and torch.isfinite(f).all()
    torch.testing.assert_close(m(x), f)  # eval mode (no dropout): forward is the feature vector


def test_features_do_not_mix_samples():
    # GroupNorm is per sample: a jet's embedding does not depend on the rest of the batch
    m = resnet15(stem_width=4, widths=(4, 8), strides=(1, 2), groups=2).eval()
    x = torch.randn(4, 3, 31, 31)
    torch.testing.assert_close(m.forward_features(x)[:1], m.forward_features(x[:1]), rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    cfg = ResNetConfig(widths=(4, 8), strides=(1, 2))
    assert ResNetConfig.from_dict(cfg.to_dict()) == cfg


def test_projection_head():
    assert ProjectionHead(512)(torch.randn(5, 512)).shape == (5, 128)
