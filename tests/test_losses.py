"""InfoNCE against the SimCLR paper's algorithm, and the DDP equality that global negatives need."""

import math

import pytest
import torch
import torch.nn.functional as F

from jetlib.losses import InfoNCELoss


def naive_nt_xent(z1, z2, tau):
    """Chen et al. 2020, Algorithm 1, written as loops: l(i, j) over the 2N augmented samples."""
    n = z1.shape[0]
    z = torch.empty(2 * n, z1.shape[1], dtype=torch.float64)
    z[0::2], z[1::2] = z1.double(), z2.double()  # z[2k], z[2k+1]: the two views of jet k
    z = z / z.norm(dim=1, keepdim=True)
    s = z @ z.T

    def loss(i, j):
        denom = sum(math.exp(s[i, k] / tau) for k in range(2 * n) if k != i)
        return -math.log(math.exp(s[i, j] / tau) / denom)

    return sum(loss(2 * k, 2 * k + 1) + loss(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.07), (7, 16, 0.5), (16, 8, 0.2)])
def test_matches_the_papers_algorithm(n, d, tau):
    g = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    got = InfoNCELoss(temperature=tau, learnable=False)(z1, z2)
    assert got.item() == pytest.approx(naive_nt_xent(z1, z2, tau), rel=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5, 64])
def test_collinear_embeddings_give_log_2n_minus_1(n):
    # every embedding the same direction: all 2n - 1 candidates score alike, so each term is log(2n - 1)
    z = torch.ones(n, 4) * torch.arange(1, n + 1).view(-1, 1)  # lengths differ; directions do not
    loss = InfoNCELoss(temperature=0.1, learnable=False)(z, 3 * z)
    assert loss.item() == pytest.approx(math.log(2 * n - 1), abs=1e-5)


@pytest.mark.parametrize("noise", [1.0, 3.0])  # bf16 logits were off by 7e-3 and 9e-4 relative here
def test_logits_are_fp32_under_bf16_autocast(noise):
    # bf16 embeddings, as a model under autocast returns them; the loss must not drop to bf16 matmuls
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(64, 32, generator=g).bfloat16()
    z2 = (z1.float() + noise * torch.randn(64, 32, generator=g)).bfloat16()
    loss = InfoNCELoss(temperature=0.01, learnable=False)
    reference = loss(z1.float(), z2.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(z1, z2)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference.item(), rel=1e-4)


def test_symmetric_in_the_two_views():
    z1, z2 = torch.randn(9, 5), torch.randn(9, 5)
    loss = InfoNCELoss()
    assert loss(z1, z2).item() == pytest.approx(loss(z2, z1).item(), rel=1e-6)


def test_perfect_alignment_beats_random():
    z = F.normalize(torch.randn(32, 64), dim=1)
    loss = InfoNCELoss(temperature=0.1, learnable=False)
    assert loss(z, z).item() < loss(z, torch.randn(32, 64)).item()


def test_temperature_is_learnable_in_log_space_and_clamped():
    loss = InfoNCELoss(temperature=0.07)
    assert loss.temperature == pytest.approx(0.07)
    assert loss.log_scale.item() == pytest.approx(math.log(1 / 0.07))
    z1, z2 = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4)
    loss(z1, z2).backward()
    assert torch.isfinite(loss.log_scale.grad) and loss.log_scale.grad != 0
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1 / 1e-4))  # far past the clamp
    assert loss.temperature == pytest.approx(0.01)
    assert torch.isfinite(loss(z1, z2))


def test_fixed_temperature_is_a_buffer():
    loss = InfoNCELoss(temperature=0.5, learnable=False)
    assert list(loss.parameters()) == [] and "log_scale" in dict(loss.named_buffers())


# --- two processes with gloo vs one process on the same global batch -----------------------------------

def _tiny_model():
    from jetlib import methods
    from jetlib.models.resnet import ResNet, ResNetConfig

    torch.manual_seed(0)
    cfg = ResNetConfig(in_channels=2, stem_width=4, widths=(4, 8), strides=(1, 2), groups=2, dropout=0.0)
    return methods.create("simclr", ResNet(cfg), {"proj_hidden": 8, "proj_dim": 6, "temperature": 0.1})


def _global_batch(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 2, 9, 9, generator=g), torch.rand(n, 2, 9, 9, generator=g)


def gloo_job(rank, world):
    """SimCLR under DDP on this rank's half of the global batch (the shared gloo group, ``tests/gloo.py``)."""
    from jetlib import dist

    model = torch.nn.parallel.DistributedDataParallel(_tiny_model())
    v1, v2 = _global_batch()
    b = v1.shape[0] // world
    mine = slice(rank * b, (rank + 1) * b)
    loss = model(v1[mine], v2[mine])
    loss.backward()
    mean_loss = dist.all_reduce_mean(loss)
    return {"loss": mean_loss, "grads": {n: p.grad.clone() for n, p in model.module.named_parameters()}}


@pytest.mark.ddp
@pytest.mark.slow  # the session's one gloo run (tests/gloo.py): two processes starting torch, ~19 s of CPU
def test_two_gloo_processes_equal_one_process_on_the_global_batch(gloo_ranks):
    from tests.gloo import results

    model = _tiny_model()
    v1, v2 = _global_batch()
    loss = model(v1, v2)
    loss.backward()
    ranks = results(gloo_ranks, "simclr")
    assert len(ranks) == 2
    for got in ranks:
        assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
        for name, p in model.named_parameters():
            torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert model.loss.log_scale.grad.abs() > 0  # the temperature's gradient is compared too
