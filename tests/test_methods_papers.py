"""Methods as their papers run them: BYOL's heads normalise each view on its own, Barlow Twins takes any
lambda (0 included), SimCLR offers the paper's fixed temperature."""

import copy

import pytest
import torch
import torch.nn.functional as F

from jetlib import methods
from jetlib import pretrain as pt
from jetlib.errors import ConfigError
from jetlib.models.resnet import ResNet, ResNetConfig
from tests.test_losses import naive_nt_xent


def _encoder(seed=0):
    torch.manual_seed(seed)
    return ResNet(ResNetConfig(in_channels=2, stem_width=4, widths=(4, 8), strides=(1, 2), groups=2, dropout=0.0))


def _views(n=8):
    g = torch.Generator().manual_seed(1)
    v1 = torch.rand(n, 2, 9, 9, generator=g)
    return v1, 3 * torch.rand(n, 2, 9, 9, generator=g) + 1  # views far apart: pooled statistics would differ


def _bns(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d)]


def test_byol_projector_and_predictor_normalise_each_view_alone():
    """DeepMind byol_experiment.py (``_forward``: the network is called once per view) and lightly's BYOL
    example: the projector's and predictor's BatchNorm batch statistics are one view's, never the pooled 2B."""
    m = methods.create("byol", _encoder(), {"proj_hidden": 8, "proj_dim": 6})
    before = {id(bn): copy.deepcopy(bn) for bn in _bns(m.projector) + _bns(m.predictor)}
    seen = []
    hooks = [bn.register_forward_hook(lambda mod, i, o: seen.append((mod, i[0].detach().clone(), o.detach().clone())))
             for bn in _bns(m.projector) + _bns(m.predictor)]  # clone: the ReLU after a BN is in place
    v1, v2 = _views()
    m(v1, v2)
    for h in hooks:
        h.remove()
    assert {id(mod) for mod, _, _ in seen} == set(before) and len(seen) == 2 * len(before)
    for bn in _bns(m.projector) + _bns(m.predictor):
        calls = [(x, y) for mod, x, y in seen if mod is bn]
        ref = before[id(bn)]  # a fresh copy fed the two views one after the other: the running statistics
        for x, y in calls:
            assert x.shape[0] == v1.shape[0]  # one view's batch
            expected = ref(x)
            torch.testing.assert_close(y, expected)
        torch.testing.assert_close(bn.running_mean, ref.running_mean)
        torch.testing.assert_close(bn.running_var, ref.running_var)
        pooled = copy.deepcopy(before[id(bn)])
        pooled(torch.cat([x for x, _ in calls]))
        assert not torch.allclose(bn.running_var, pooled.running_var, rtol=1e-3)  # the test can tell them apart


def test_byol_loss_pairs_each_views_prediction_with_the_others_target():
    m = methods.create("byol", _encoder(), {"proj_hidden": 8, "proj_dim": 6})
    v1, v2 = _views()
    loss = m(v1, v2)
    with torch.no_grad():
        t1, t2 = m.target_encoder.forward_features(v1), m.target_encoder.forward_features(v2)
        z1, z2 = m.target_projector(t1), m.target_projector(t2)
    p1 = m.predictor(m.projector(m.encoder.forward_features(v1)))
    p2 = m.predictor(m.projector(m.encoder.forward_features(v2)))
    ref = sum(2 - 2 * F.cosine_similarity(p, z).mean() for p, z in ((p1, z2), (p2, z1)))
    torch.testing.assert_close(loss, ref)


def test_barlow_twins_takes_lambda_zero_as_the_pure_on_diagonal_loss():
    m = methods.create("barlowtwins", _encoder(), {"proj_dim": 6, "lambd": 0.0})
    assert m.params.lambd == 0.0 and m.loss.lambd == 0.0
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(32, 6, generator=g), torch.randn(32, 6, generator=g)
    a = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
    b = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
    c = a.T @ b / 32
    torch.testing.assert_close(m.loss(z1, z2), (1 - torch.diagonal(c)).pow(2).sum())
    default = methods.create("barlowtwins", _encoder(), {"proj_dim": 6})
    assert default.params.lambd is None and float(default.loss(z1, z2)) > float(m.loss(z1, z2))


@pytest.mark.parametrize("text,value", [("0", 0.0), ("0.005", 0.005), ("none", None)])
def test_barlow_twins_lambda_from_the_command_line(text, value):
    assert pt.make_config("tiny", method="barlowtwins", lambd=text).method_params["lambd"] == value


def test_barlow_twins_refuses_a_negative_lambda():
    with pytest.raises(ConfigError, match="lambd"):
        pt.make_config("tiny", method="barlowtwins", lambd="-0.1")


def test_simclr_fixed_temperature_matches_the_paper_and_never_moves():
    """Chen et al. 2020, Algorithm 1 at a fixed tau (tests/test_losses.py's loop): the loss equals it, the
    temperature is a buffer outside the optimiser, and training steps leave it where it was."""
    cfg = pt.make_config("tiny", method="simclr", temperature="0.5", learn_temperature="false")
    assert cfg.method_params == {"proj_hidden": 16, "proj_dim": 8, "temperature": 0.5, "learn_temperature": False}
    m = methods.create("simclr", _encoder(), {"proj_hidden": 8, "proj_dim": 6, "temperature": 0.5,
                                              "learn_temperature": False})
    v1, v2 = _views()
    with torch.no_grad():
        z = m.projector(m.encoder.forward_features(torch.cat([v1, v2])))
    assert float(m.loss(z[:8], z[8:])) == pytest.approx(naive_nt_xent(z[:8], z[8:], 0.5), rel=1e-5)
    params = [p for g in m.param_groups(1e-4) for p in g["params"]]
    assert all(p is not m.loss.log_scale for p in params)
    opt = torch.optim.AdamW(m.param_groups(1e-4), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        m(v1, v2).backward()
        opt.step()
    assert m.stats()["temperature"] == pytest.approx(0.5, rel=1e-6)
    learned = methods.create("simclr", _encoder(), {"proj_hidden": 8, "proj_dim": 6, "temperature": 0.5})
    opt = torch.optim.AdamW(learned.param_groups(1e-4), lr=0.1)
    opt.zero_grad()
    learned(v1, v2).backward()
    opt.step()
    assert learned.stats()["temperature"] != pytest.approx(0.5, rel=1e-6)  # the default still learns it


def test_barlow_twins_scales_its_loss_as_solo_learn_does():
    """The method's loss is ``scale_loss`` (default 0.1, solo-learn's) times the paper's: LARS steps norms and
    biases by plain SGD, so the factor reaches them even though the trust ratio cancels it for the weights."""
    m = methods.create("barlowtwins", _encoder(), {"proj_dim": 6})
    assert m.params.scale_loss == 0.1
    v1, v2 = _views()
    h1, h2 = m.encoder.forward_features(v1), m.encoder.forward_features(v2)
    torch.testing.assert_close(m(v1, v2), 0.1 * m.loss(m.projector(h1), m.projector(h2)))
    one = methods.create("barlowtwins", _encoder(), {"proj_dim": 6, "scale_loss": 1.0})
    one.load_state_dict(m.state_dict())
    torch.testing.assert_close(one(v1, v2), 10 * m(v1, v2))
    with pytest.raises(ConfigError, match="scale_loss"):
        methods.create("barlowtwins", _encoder(), {"scale_loss": 0})
