"""VICReg, Barlow Twins and BYOL against references written from the papers, plus closed-form cases.

Each reference below is an independent transcription of the authors' published formulation
in float64 with plain loops over the batch and dimensions; none calls jetlib.losses:

* VICReg: Bardes, Ponce and LeCun, ICLR 2022, Sec. 3 (eqs. 1-6) and Algorithm 1, with the two
  variance terms averaged as the authors' code does (facebookresearch/vicreg, main_vicreg.py,
  ``VICReg.forward``: ``std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2``).
* Barlow Twins: Zbontar et al., ICML 2021, Sec. 2, eqs. 1-2 and Algorithm 1, with the
  BatchNorm eps the authors' code standardises with (facebookresearch/barlowtwins, main.py,
  ``BarlowTwins.forward``: ``BatchNorm1d(sizes[-1], affine=False)``, eps 1e-5, biased variance).
* BYOL: Grill et al., NeurIPS 2020, Sec. 3.1, eq. 2 (squared distance of the L2-normalised
  prediction and target projection) and the momentum schedule of Sec. 3.2.
"""

import math

import numpy as np
import pytest
import torch

from jetlib.losses import BarlowTwinsLoss, VICRegLoss, byol_loss, byol_momentum, ema_update
from jetlib.losses.barlowtwins import default_lambda


def _views(n, d, seed):
    """Two correlated views with per-dimension spreads from 0.2 to 2: some variance hinges bite, some not."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 2.0, d)
    z1 = torch.randn(n, d, generator=g) * scale + torch.randn(d, generator=g)
    z2 = 0.7 * z1 + 0.5 * torch.randn(n, d, generator=g) * scale
    return z1, z2


def _decorrelated(n, d, seed=0):
    """(n, d) with centred, mutually orthogonal columns of biased variance exactly 1 (float64)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(0))  # orthonormal columns, still centred (they span centred vectors)
    return q * math.sqrt(n)


# --- references ------------------------------------------------------------------------------------------

def reference_vicreg(za, zb, lam=25.0, mu=25.0, nu=1.0, eps=1e-4):
    """Bardes et al. 2022, Algorithm 1 / eqs. 1-6, loops in float64."""
    za, zb = np.asarray(za, dtype=np.float64), np.asarray(zb, dtype=np.float64)
    n, d = za.shape
    sim = sum((za[b, j] - zb[b, j]) ** 2 for b in range(n) for j in range(d)) / (n * d)

    def centred(z):
        return z - np.array([sum(z[b, j] for b in range(n)) / n for j in range(d)])

    def v(z):  # eq. 1-2: hinge on the regularised standard deviation, unbiased variance
        z = centred(z)
        return sum(max(0.0, 1.0 - math.sqrt(sum(z[b, j] ** 2 for b in range(n)) / (n - 1) + eps))
                   for j in range(d)) / d

    def c(z):  # eq. 3-4: squared off-diagonal covariances over d
        z = centred(z)
        return sum((sum(z[b, i] * z[b, j] for b in range(n)) / (n - 1)) ** 2
                   for i in range(d) for j in range(d) if i != j) / d

    return lam * sim + mu * (v(za) + v(zb)) / 2 + nu * (c(za) + c(zb))


def reference_barlow(za, zb, lambd, eps=1e-5):
    """Zbontar et al. 2021, eqs. 1-2: C_ij = sum_b za_bi zb_bj / (sqrt(sum_b za_bi^2) sqrt(sum_b zb_bj^2)),
    z centred; each sqrt(sum_b z^2 / N) regularised to sqrt(sum_b z^2 / N + eps) as BatchNorm does."""
    za, zb = np.asarray(za, dtype=np.float64), np.asarray(zb, dtype=np.float64)
    n, d = za.shape
    za, zb = za - za.mean(0), zb - zb.mean(0)
    sa = [math.sqrt(sum(za[b, i] ** 2 for b in range(n)) / n + eps) for i in range(d)]
    sb = [math.sqrt(sum(zb[b, j] ** 2 for b in range(n)) / n + eps) for j in range(d)]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            cij = sum(za[b, i] * zb[b, j] for b in range(n)) / (n * sa[i] * sb[j])
            loss += (1.0 - cij) ** 2 if i == j else lambd * cij ** 2
    return loss


def reference_byol(p, z):
    """Grill et al. 2020, eq. 2: || q / ||q|| - z' / ||z'|| ||^2, averaged over the batch."""
    p, z = np.asarray(p, dtype=np.float64), np.asarray(z, dtype=np.float64)
    total = 0.0
    for q, t in zip(p, z, strict=True):
        q, t = q / math.sqrt(sum(x * x for x in q)), t / math.sqrt(sum(x * x for x in t))
        total += sum((a - b) ** 2 for a, b in zip(q, t, strict=True))
    return total / len(p)


# --- equal to the references -----------------------------------------------------------------------------

@pytest.mark.parametrize("n,d,seed", [(2, 3, 0), (9, 5, 1), (32, 16, 2)])
def test_vicreg_matches_the_papers_algorithm(n, d, seed):
    z1, z2 = _views(n, d, seed)
    got = VICRegLoss()(z1, z2)
    assert got.item() == pytest.approx(reference_vicreg(z1, z2), rel=1e-5)


def test_vicreg_weights_enter_as_the_papers_lambda_mu_nu():
    z1, z2 = _views(16, 6, 3)
    got = VICRegLoss(sim_weight=2.0, var_weight=3.0, cov_weight=5.0, eps=1e-3)(z1, z2)
    assert got.item() == pytest.approx(reference_vicreg(z1, z2, 2.0, 3.0, 5.0, 1e-3), rel=1e-5)


@pytest.mark.parametrize("n,d,lambd,seed", [(2, 3, 0.5, 0), (9, 5, 5e-3, 1), (32, 16, 0.1, 2)])
def test_barlow_twins_matches_the_papers_algorithm(n, d, lambd, seed):
    z1, z2 = _views(n, d, seed)
    got = BarlowTwinsLoss(lambd=lambd)(z1, z2)
    assert got.item() == pytest.approx(reference_barlow(z1, z2, lambd), rel=1e-5)


def test_barlow_twins_default_lambda_is_the_papers_at_8192_scaled_as_one_over_d():
    assert default_lambda(8192) == pytest.approx(0.0051)
    assert default_lambda(512) == pytest.approx(0.0051 * 16)
    z1, z2 = _views(24, 8, 4)
    assert BarlowTwinsLoss()(z1, z2).item() == pytest.approx(reference_barlow(z1, z2, 0.0051 * 1024), rel=1e-5)


@pytest.mark.parametrize("n,d,seed", [(1, 3, 0), (9, 5, 1), (32, 16, 2)])
def test_byol_matches_the_papers_eq_2(n, d, seed):
    p, z = _views(n, d, seed)
    assert byol_loss(p, z).item() == pytest.approx(reference_byol(p, z), rel=1e-5)


# --- closed forms ----------------------------------------------------------------------------------------

def test_vicreg_identical_decorrelated_unit_variance_views_cost_nothing():
    z = _decorrelated(32, 8).float() * math.sqrt(32 / 31)  # unbiased variance 1: every hinge at 1 - sqrt(1 + eps) < 0
    terms = VICRegLoss().terms(z, z)
    assert terms["invariance"].item() == 0.0
    assert terms["variance"].item() == 0.0
    assert terms["covariance"].item() == pytest.approx(0.0, abs=1e-10)


def test_vicreg_collapsed_batch_pays_the_variance_weight_per_dimension():
    z = torch.full((16, 8), 0.3)  # every jet the same embedding: each std is sqrt(0 + 1e-4) = 0.01
    terms = VICRegLoss().terms(z, z + 1.0)
    assert terms["variance"].item() == pytest.approx(25.0 * (1 - 0.01), rel=1e-6)
    assert terms["covariance"].item() == 0.0
    assert terms["invariance"].item() == pytest.approx(25.0 * 1.0, rel=1e-6)  # mean squared difference 1


def test_barlow_twins_identical_standardised_decorrelated_views_cost_nothing():
    z = _decorrelated(64, 16).float()
    # C = I / (1 + eps): the diagonal misses 1 by 1e-5, squared 1e-10 per dimension
    assert BarlowTwinsLoss(lambd=1.0)(z, z).item() == pytest.approx(0.0, abs=1e-8)
    # a decorrelated batch against its own negation: C = -I, every diagonal term (1 - (-1))^2 = 4
    assert BarlowTwinsLoss(lambd=1.0)(z, -z).item() == pytest.approx(4.0 * 16, rel=1e-4)


def test_barlow_twins_dead_dimension_costs_one_not_nan():
    z = _decorrelated(32, 4).float()
    z[:, 2] = 5.0  # constant: variance 0, standardised to 0, C_22 = 0
    assert BarlowTwinsLoss(lambd=1.0)(z, z).item() == pytest.approx(1.0, abs=1e-4)


def test_byol_closed_forms():
    z = torch.randn(8, 5)
    assert byol_loss(z, 3 * z).item() == pytest.approx(0.0, abs=1e-6)  # same direction, any length
    assert byol_loss(z, -z).item() == pytest.approx(4.0, rel=1e-6)
    e = torch.eye(4)
    assert byol_loss(e, e.roll(1, dims=1)).item() == pytest.approx(2.0, rel=1e-6)  # orthogonal


def test_byol_stops_the_gradient_at_the_target():
    p, z = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


def test_byol_momentum_schedule():
    assert byol_momentum(0, 100) == pytest.approx(0.996)
    assert byol_momentum(100, 100) == 1.0
    assert byol_momentum(50, 100) == pytest.approx(1 - 0.004 / 2)
    assert byol_momentum(25, 100, base=0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    taus = [byol_momentum(k, 40) for k in range(41)]
    assert all(a < b for a, b in zip(taus[:-1], taus[1:], strict=True))
    for bad in [(-1, 10), (11, 10), (0, 0)]:
        with pytest.raises(ValueError, match="byol_momentum"):
            byol_momentum(*bad)


def test_ema_update_moves_parameters_and_copies_buffers():
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    target = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    online(torch.randn(10, 4))  # online running statistics move away from the target's
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(target, online, 0.9)
    for name, p in online.named_parameters():
        expected = 0.9 * before[name] + 0.1 * p.detach()
        torch.testing.assert_close(dict(target.named_parameters())[name].detach(), expected, rtol=1e-6, atol=1e-7)
        assert dict(target.named_parameters())[name].grad_fn is None
    for name, b in online.named_buffers():
        assert torch.equal(dict(target.named_buffers())[name], b)
    ema_update(target, online, 0.0)
    online_state = online.state_dict()
    assert all(torch.equal(v, online_state[k]) for k, v in target.state_dict().items())


def test_ema_update_rejects_a_mismatched_target_or_momentum():
    with pytest.raises(ValueError, match="names or shapes"):
        ema_update(torch.nn.Linear(4, 3), torch.nn.Linear(4, 2), 0.99)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(torch.nn.Linear(4, 3), torch.nn.Linear(4, 3), 1.5)


# --- precision, symmetry, bad input ----------------------------------------------------------------------

LOSSES = {"vicreg": VICRegLoss(), "barlowtwins": BarlowTwinsLoss(lambd=0.05), "byol": byol_loss}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fp32_under_bf16_autocast(name):
    # bf16 embeddings as a model under autocast returns them; the loss's matmuls must stay fp32
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(256, 64, generator=g).bfloat16()
    z2 = (z1.float() + 0.1 * torch.randn(256, 64, generator=g)).bfloat16()
    loss = LOSSES[name]
    reference = loss(z1.float(), z2.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(z1, z2)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["vicreg", "barlowtwins"])
def test_symmetric_in_the_two_views(name):
    z1, z2 = _views(12, 7, 5)
    assert LOSSES[name](z1, z2).item() == pytest.approx(LOSSES[name](z2, z1).item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mismatched_views_are_refused(name):
    with pytest.raises(ValueError, match="same shape"):
        LOSSES[name](torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="same shape"):
        LOSSES[name](torch.randn(4), torch.randn(4))


@pytest.mark.parametrize("name", ["vicreg", "barlowtwins"])
def test_a_batch_of_one_is_refused(name):
    with pytest.raises(ValueError, match="at least 2 jets"):
        LOSSES[name](torch.randn(1, 3), torch.randn(1, 3))
