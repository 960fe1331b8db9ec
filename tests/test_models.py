import math
import re

import pytest
import torch
from torch import nn

from jetlib import models
from jetlib.errors import ConfigError
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


def test_variants_are_the_presets_widths():
    from jetlib import models

    cpu = models.create("resnet", **models.VARIANTS["cpu"].to_dict())
    assert sum(p.numel() for p in cpu.parameters()) == 405_040  # "a narrower ResNet-15 (405k parameters)"
    assert models.VARIANTS["gpu"] == ResNetConfig() and models.VARIANTS["tiny"].widths[-1] == 16


def test_from_blob_rebuilds_the_same_network_with_its_head():
    from jetlib import models

    net = models.create("resnet", **{**models.VARIANTS["tiny"].to_dict(), "in_channels": 2}).reset_head("reg", depth=2)
    blob = {"arch": net.arch, "config": net.config(), "task": net.task, "head": net.head_config,
            "state_dict": net.state_dict()}
    back = models.from_blob(blob).eval()
    x = torch.randn(3, 2, 24, 24)
    torch.testing.assert_close(back(x), net.eval()(x), rtol=0, atol=0)
    assert back(x).shape == (2, 3)  # (depth, B): the regression head's deep supervision


@pytest.mark.parametrize("blob,problem", [
    ({"arch": "os.system"}, "records arch 'os.system', expected one of resnet, vgg"),
    ({"kind": "resnet"}, "records no arch, expected one of"),
    ({"arch": "resnet", "config": {"widths": "many"}, "state_dict": {}}, "does not describe a resnet network"),
    ({"arch": "resnet", "config": {}, "task": "nope", "state_dict": {}}, "unknown task 'nope'"),
    ({"arch": "vgg", "config": {}, "state_dict": {"x": torch.zeros(1)}},
     "its config implies head.members.0.0.weight of shape (128, 256) but its weights hold none"),
])
def test_from_blob_refuses_what_it_cannot_rebuild_in_one_line(blob, problem):
    from jetlib import models
    from jetlib.errors import DataError

    with pytest.raises(DataError, match=re.escape(problem)):
        models.from_blob(blob)


def test_vgg_two_class_logits_are_its_mean_logit():
    """The VGG ensemble scores as a classifier: softmax class 1 of [0, l] is sigmoid(l), and the
    cross-entropy of [0, l] is the binary cross-entropy of l (the baseline's own loss)."""
    import torch.nn.functional as F

    from jetlib import models

    vgg = models.create("vgg", widths=(4, 8), depths=(1, 1), heads=3, head_hidden=8).eval()
    x, y = torch.randn(5, 3, 16, 16), torch.tensor([0, 1, 1, 0, 1])
    out = vgg(x)
    mean = vgg.head.logits(vgg.forward_features(x)).mean(0)
    torch.testing.assert_close(out.softmax(1)[:, 1], mean.sigmoid())
    torch.testing.assert_close(F.cross_entropy(out, y), F.binary_cross_entropy_with_logits(mean, y.float()))
    assert vgg.task == "cls" and vgg.tasks == ("cls",)


def test_freeze_features_trains_only_the_head_and_keeps_the_encoder_in_eval():
    from jetlib import models

    net = models.create("resnet", **models.VARIANTS["tiny"].to_dict()).reset_head("cls", hidden=8)
    net.freeze_features().train()
    assert all(not p.requires_grad for n, p in net.named_parameters() if not n.startswith("head."))
    assert all(p.requires_grad for p in net.head.parameters())
    assert net.head.training and not any(m.training for n, m in net.named_modules() if n and not n.startswith("head"))
    x = torch.randn(4, 3, 24, 24)
    net(x).sum().backward()
    assert all(p.grad is None for n, p in net.named_parameters() if not n.startswith("head."))
    assert all(p.grad is not None for p in net.head.parameters())


def test_vit_shapes_positions_and_any_grid():
    from jetlib.models.vit import ViTConfig, sincos_positions

    net = models.create("vit", **models.variant("vit", "tiny"))
    assert net.arch == "vit" and net.num_features == 16 and net.config() == ViTConfig(dim=16, depth=1, heads=2,
                                                                                      mlp_ratio=2).to_dict()
    x = torch.randn(2, 3, 125, 125)
    tokens = net.patch_embed(x)
    assert tokens.shape == (2, 16, 25, 25)  # 125 = 25 patches of 5
    assert net.forward_features(x).shape == (2, 16) and net.forward_features(x[..., :30, :40]).shape == (2, 16)
    pos = sincos_positions(3, 4, 8)
    assert pos.shape == (12, 8)
    # row then column, sines then cosines: token (r, c) = [sin r, sin r w, cos r, cos r w, sin c, ...]
    w = 1 / 10000 ** 0.5
    r, c = 2, 3
    expected = torch.tensor([math.sin(r), math.sin(r * w), math.cos(r), math.cos(r * w),
                             math.sin(c), math.sin(c * w), math.cos(c), math.cos(c * w)])
    assert torch.allclose(pos[r * 4 + c], expected, atol=1e-6)
    net.reset_head("cls", hidden=8)
    assert net(x).shape == (2, 2)
    with pytest.raises(ConfigError, match="divisible"):
        ViTConfig(dim=18, heads=2)


def test_a_registry_lists_its_builtins_before_importing_them_and_imports_on_first_use(tmp_path, monkeypatch):
    """The one way networks, tasks and methods register: a name -> module table, imported when first asked for."""
    import sys

    (tmp_path / "reg_pkg.py").write_text("from jetlib.registry import Registry\n"
                                         "COLOURS = Registry('colour', builtin={'blue': 'reg_pkg_blue'})\n")
    (tmp_path / "reg_pkg_blue.py").write_text("from reg_pkg import COLOURS\n"
                                              "@COLOURS.register('blue')\ndef blue(): return '#00f'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from reg_pkg import COLOURS

    COLOURS.register("red")(lambda: "#f00")
    assert list(COLOURS.names) == ["blue", "red"] and "blue" in COLOURS.names and "reg_pkg_blue" not in sys.modules
    assert COLOURS.get("blue")() == "#00f" and "reg_pkg_blue" in sys.modules
    assert [f() for f in COLOURS.values()] == ["#00f", "#f00"]  # the table's order, then registrations
    with pytest.raises(ConfigError, match="unknown colour 'green': choose one of blue, red"):
        COLOURS.get("green")
    for name in ("reg_pkg", "reg_pkg_blue"):
        monkeypatch.delitem(sys.modules, name)


def test_a_factory_without_a_config_class_is_checked_by_its_signature():
    """A plugin's keyword arguments become its config: typed by annotation, else by the default (a tuple
    default by its first item), each ``--set model.NAME`` converted or refused by that type."""
    from jetlib.models.registry import step_model

    @models.register_model("sig_net", variants={"tiny": {"widths": (2, 2)}})
    def sig_net(in_channels=3, widths=(4, 8), scale: float = 1.0, norm="group"):
        return resnet15(in_channels=in_channels, widths=widths, strides=(1,) * len(widths))

    try:
        assert models.settable("sig_net") == ("widths", "scale", "norm")
        cfg, rest = step_model("sig_net", "tiny", {"model.widths": "3,5,7", "model.scale": "0.5", "lr": "0.1"})
        assert cfg.to_dict() == {"in_channels": 3, "widths": (3, 5, 7), "scale": 0.5, "norm": "group"}
        assert rest == {"lr": "0.1"}  # the step's other values, untouched
        assert step_model("sig_net", "tiny", {})[0].widths == (2, 2)  # the preset's size
        assert models.model_config("sig_net", cfg.to_dict()) == cfg  # a record read back builds the same config
        for key, value, line in [("model.scale", "nan", "model.scale: must be a finite number"),
                                 ("model.widths", "4,x", "model.widths[1]: must be a valid integer"),
                                 ("model.norm.x", "1", "model.norm.x: norm has no fields of its own")]:
            with pytest.raises(ConfigError, match=re.escape(line)) as e:
                step_model("sig_net", "gpu", {key: value})
            assert "the sig_net network's arguments: widths, scale, norm" in str(e.value)
    finally:
        models.unregister_model("sig_net")
    assert "sig_net" not in models.ARCHS
    with pytest.raises(TypeError, match="'depth' has none"):
        models.register_model("no_default")(lambda in_channels=3, *, depth: None)
    assert "no_default" not in models.ARCHS


def test_a_config_sized_for_another_network_is_refused_not_mixed():
    """Changing the network alone keeps the old network's arguments: refused in one line, never half applied."""
    from jetlib import pretrain as pt
    from jetlib.config import override

    cfg = pt.make_config("tiny")
    with pytest.raises(ConfigError, match=r"^model: a ResNetConfig does not size the vit network"):
        override(cfg, {"encoder": "vit"})
    vit = pt.make_config("tiny", encoder="vit", **{"model.depth": "2"})
    assert override(vit, {"model.dim": "32"}).model.depth == 2  # one network's field by field
    assert pt.PretrainConfig(encoder="vit", model={"dim": 8, "heads": 2}).model.depth == 6  # a dict: its defaults
