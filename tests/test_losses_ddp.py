"""Two gloo processes equal one process on the same global batch, for every SSL loss.

The structure of InfoNCE's test in test_losses.py, with a small linear model feeding each
loss so that the parameter gradients check the whole path: the loss, jetlib.dist.gather's
backward and DDP's gradient averaging. The processes run the real DDP and gloo (torch
2.14.1); what the losses rely on from them (pytorch/pytorch, v2.14.1): parameters and
buffers are broadcast from rank 0 at construction (torch/nn/parallel/distributed.py,
``DistributedDataParallel.__init__`` calling ``_sync_module_states``), and each gradient is
all-reduced and divided by the world size (torch/csrc/distributed/c10d/reducer.cpp,
``Reducer::set_divide_factor``: ``div_factor_ = process_group_->getSize()``), so rank r's
gradient is the mean over ranks of d(loss_r)/d(theta).

A negative control (VICReg with ``gather_distributed=False``) shows the comparison can
fail: with per-rank statistics the gradients differ from the global batch's.
"""

import copy

import pytest
import torch
from torch import nn

from jetlib.losses import BarlowTwinsLoss, InfoNCELoss, VICRegLoss, byol_loss, ema_update
from tests.gloo import WORLD, results

# every test reads the two gloo ranks of the session's one gloo run (tests/gloo.py): ~19 s of CPU
pytestmark = pytest.mark.slow

GLOBAL_BATCH, D_IN, D_OUT = 8, 6, 5
EMA = 0.9


class Pair(nn.Module):
    """A linear projector applied to both views, then the loss."""

    def __init__(self, loss):
        super().__init__()
        self.proj = nn.Linear(D_IN, D_OUT)
        self.loss = loss

    def forward(self, x1, x2):
        return self.loss(self.proj(x1), self.proj(x2))


class BYOLPair(nn.Module):
    """Online projector + predictor against an EMA copy of the projector; the symmetrised loss."""

    def __init__(self):
        super().__init__()
        self.online = nn.Linear(D_IN, D_OUT)
        self.predictor = nn.Linear(D_OUT, D_OUT)
        self.target = copy.deepcopy(self.online).requires_grad_(False)

    def forward(self, x1, x2):
        p1, p2 = self.predictor(self.online(x1)), self.predictor(self.online(x2))
        with torch.no_grad():
            t1, t2 = self.target(x1), self.target(x2)
        return byol_loss(p1, t2) + byol_loss(p2, t1)


def _model(case):
    torch.manual_seed(0)
    if case == "byol":
        return BYOLPair()
    loss = {"infonce": lambda: InfoNCELoss(temperature=0.2),
            "vicreg": VICRegLoss,
            "vicreg_local": lambda: VICRegLoss(gather_distributed=False),
            "barlowtwins": lambda: BarlowTwinsLoss(lambd=0.2)}[case]()
    return Pair(loss)


CASES = ("infonce", "vicreg", "barlowtwins", "byol", "vicreg_local")


def _global_batch():
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(GLOBAL_BATCH, D_IN, generator=g)
    return x1, x1 + 0.3 * torch.randn(GLOBAL_BATCH, D_IN, generator=g)


def _step(model, x1, x2):
    """Loss, backward, one SGD step, then BYOL's EMA; returns (loss, grads, the state after the step)."""
    module = getattr(model, "module", model)
    loss = model(x1, x2)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    if isinstance(module, BYOLPair):
        ema_update(module.target, module.online, EMA)
    return loss.detach(), grads, {k: v.clone() for k, v in module.state_dict().items()}


def gloo_job(rank, world):
    """Every case on this rank's half of the global batch, in the shared gloo group (``tests/gloo.py``)."""
    from jetlib import dist

    x1, x2 = _global_batch()
    b = GLOBAL_BATCH // world
    mine = slice(rank * b, (rank + 1) * b)
    results = {}
    for case in CASES:
        model = nn.parallel.DistributedDataParallel(_model(case))
        loss, grads, state = _step(model, x1[mine], x2[mine])
        results[case] = {"loss": loss, "mean_loss": dist.all_reduce_mean(loss), "grads": grads, "state": state}
    return results


@pytest.fixture(scope="module")
def ranks(gloo_ranks):
    assert len(gloo_ranks) == WORLD
    return results(gloo_ranks, "losses_ddp")


def _one_process(case):
    x1, x2 = _global_batch()
    return _step(_model(case), x1, x2)


@pytest.mark.ddp
@pytest.mark.parametrize("case", ["infonce", "vicreg", "barlowtwins", "byol"])
def test_two_gloo_processes_equal_one_process_on_the_global_batch(ranks, case):
    loss, grads, state = _one_process(case)
    for got in (r[case] for r in ranks):
        assert got["mean_loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        assert grads.keys() == got["grads"].keys()
        for name, g in grads.items():
            assert g.abs().sum() > 0, name  # a gradient that is zero everywhere would prove nothing
            torch.testing.assert_close(got["grads"][name], g, rtol=1e-5, atol=1e-7, msg=f"{case}: {name}")
        # after one SGD step (and BYOL's EMA) every rank holds the one-process model, the target included
        for name, v in state.items():
            torch.testing.assert_close(got["state"][name], v, rtol=1e-5, atol=1e-7, msg=f"{case}: {name}")


@pytest.mark.ddp
@pytest.mark.parametrize("case", ["vicreg", "barlowtwins"])
def test_every_rank_returns_the_global_batch_loss(ranks, case):
    # the batch statistics are global, so each rank's own loss is already the one-process value
    loss = _one_process(case)[0]
    for r in ranks:
        assert r[case]["loss"].item() == pytest.approx(loss.item(), rel=1e-5)


@pytest.mark.ddp
def test_byol_target_is_identical_across_ranks(ranks):
    a, b = (r["byol"]["state"] for r in ranks)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("target."))


@pytest.mark.ddp
def test_per_rank_statistics_would_fail_the_comparison(ranks):
    # the negative control: VICReg's variance and covariance over 4 local jets instead of the global 8
    _, grads, _ = _one_process("vicreg")
    got = ranks[0]["vicreg_local"]["grads"]
    assert not torch.allclose(got["proj.weight"], grads["proj.weight"], rtol=1e-3, atol=1e-5)
