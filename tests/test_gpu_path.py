"""The GPU path on a CPU: no per-step read-backs, the device asked for, one GPU's RNG state per
rank, channels_last after the augmentations, and compile caches that need no writable home.

Each behaviour of PyTorch relied on is named where it is used. A device run checks the same under
``torch.cuda.set_sync_debug_mode("error")`` (``torch/cuda/__init__.py``, ``set_sync_debug_mode``):
``benchmarks/gpu.py`` does, see its ``sync_free`` measurement.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jetlib import checkpoint, device, dist
from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.loader import JetLoader
from jetlib.errors import ConfigError
from tests.conftest import write_toy_h5


@pytest.fixture(autouse=True)
def _keep_onednn():
    """prepare_compile turns oneDNN off for a CPU compile (a process-wide flag): restore it for the
    tests after this one."""
    before = torch.backends.mkldnn.enabled
    yield
    torch.backends.mkldnn.enabled = before

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")
JETLIB = str(Path(device.__file__).parent)


@pytest.fixture
def readbacks(monkeypatch):
    """Counts reads of a tensor's value into Python made from jetlib's own code, by file (every thread).

    A patch of public ``torch.Tensor`` methods. Only jetlib's frames count: inside torch, e.g. Adam
    reads its ``step`` counter with ``.item()``, but that counter is a CPU tensor unless the optimizer
    is fused or capturable (``torch/optim/adam.py``, ``_single_tensor_adam`` / ``_get_value``), so it
    is not a device sync, and jetlib uses the fused one on CUDA."""
    counts: Counter = Counter()
    lock = threading.Lock()

    def wrap(name):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, **kw):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(JETLIB):
                with lock:
                    counts[Path(caller).name] += 1
            return real(self, *a, **kw)
        return counted

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name))
    return counts


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpu-path")
    write_toy_h5(d / "toy.h5", n=160)
    return ingest(d / "toy.h5", str(d / "store"), cfg=IngestConfig(shard_rows=64, row_group_rows=16)), d


def _without_loader(counts: Counter) -> dict:
    return {k: v for k, v in counts.items() if k != "loader.py"}  # the loader has its own test below


@pytest.mark.slow
@pytest.mark.parametrize("step", ["finetune", "baseline"])
def test_supervised_training_reads_back_per_epoch_not_per_step(toy, tmp_path, readbacks, step):
    """Four times the steps (batch 8 vs 32, for training and validation) must not add one read-back:
    the loss is summed on the device, predict copies each array once."""
    from jetlib import baseline as bl
    from jetlib import finetune as ft

    uri, _ = toy
    seen = []
    for batch in (32, 8):
        readbacks.clear()
        if step == "finetune":
            cfg = ft.make_config("tiny", task="cls", mode="scratch", epochs=2, batch_size=batch,
                                 eval_batch_size=batch, augment="physics")
            ft.finetune(uri, str(tmp_path / f"ft{batch}"), cfg, device="cpu")
        else:
            cfg = bl.make_config("tiny", epochs=2, batch_size=batch, eval_batch_size=batch)
            bl.baseline(uri, str(tmp_path / f"bl{batch}"), cfg, device="cpu")
        seen.append(_without_loader(readbacks))
    assert seen[0] == seen[1], seen
    assert sum(seen[1].values()) <= 20  # a few per epoch (loss, validation arrays), not per batch


@pytest.mark.slow
def test_pretraining_reads_back_every_log_interval(toy, tmp_path, readbacks):
    from jetlib import pretrain as pt

    uri, _ = toy
    seen = []
    for steps in (2, 6):
        readbacks.clear()
        cfg = pt.make_config("tiny", epochs=1, batch_size=8, max_steps_per_epoch=steps, log_interval=100,
                             monitor_bank=0)
        pt.pretrain(uri, str(tmp_path / f"pre{steps}"), cfg, device="cpu")
        seen.append(_without_loader(readbacks))
    assert seen[0] == seen[1], seen


def test_resident_loader_on_the_cuda_path_never_reads_back(toy, readbacks):
    """The fixed-capacity gather (``static_shapes``, the CUDA path) densifies with no read-back at all."""
    uri, _ = toy
    loader = JetLoader(uri, batch_size=8, mode="resident")
    loader.static_shapes = True
    list(loader)  # the first pass reads the split in: host work, counted separately
    readbacks.clear()
    assert len(list(loader)) == len(loader) > 4
    assert readbacks["loader.py"] == 0


def test_streamed_batches_reach_the_device_without_read_back(toy, readbacks):
    uri, _ = toy
    loader = JetLoader(uri, batch_size=8, mode="stream")
    parts = next(iter(loader._host_batches(pin=False)))
    readbacks.clear()
    batch = loader._to_device(parts)  # what the consumer does on CUDA
    assert readbacks["loader.py"] == 0 and batch.x.shape == (8, 3, 125, 125)


def test_augmentations_build_no_tensor_from_host_data(monkeypatch):
    """``torch.tensor([...], device=dev)`` is a host-to-device copy per call: none per view."""
    from jetlib.augment import AugmentConfig, two_views

    def refuse(*a, **kw):
        raise AssertionError("torch.tensor called while augmenting")

    x = torch.rand(6, 3, 17, 17)
    monkeypatch.setattr(torch, "tensor", refuse)
    for preset in ("seed", "physics"):
        v1, v2 = two_views(x, AugmentConfig(preset))
        assert v1.shape == x.shape


def test_grid_sample_returns_nchw_so_channels_last_comes_after_the_views():
    """``torch.nn.functional.grid_sample`` (``torch/nn/functional.py``; ATen ``grid_sampler_2d``
    allocates its output contiguous) gives NCHW for a channels_last input: converting before the
    augmentations was a wasted copy. The training loop converts the views instead."""
    from jetlib import pretrain as pt

    x = torch.rand(4, 3, 9, 9).contiguous(memory_format=torch.channels_last)
    grid = F.affine_grid(torch.eye(2, 3).expand(4, 2, 3), list(x.shape), align_corners=False)
    assert F.grid_sample(x, grid, align_corners=False).is_contiguous()  # NCHW

    class Probe(nn.Module):  # records the layout the network receives (no convolution: see pretrain.py)
        def __init__(self):
            super().__init__()
            self.w, self.layouts = nn.Parameter(torch.ones(())), []

        def forward(self, v1, v2):
            self.layouts.append((v1.is_contiguous(memory_format=torch.channels_last),
                                 v2.is_contiguous(memory_format=torch.channels_last)))
            return self.w * (v1.mean() + v2.mean())

        def after_step(self, step, total):  # the Method hook the loop calls (jetlib.methods.base)
            pass

    class Loader:
        device, batch_size = torch.device("cpu"), 4

        def __iter__(self):
            from jetlib.data.loader import Batch
            return iter([Batch(x=torch.rand(4, 3, 9, 9), jet=torch.arange(4))] * 2)

    for on in (True, False):
        probe = Probe()
        cfg = pt.make_config("tiny", log_interval=1)
        pt.train_one_epoch(probe, Loader(), torch.optim.SGD(probe.parameters(), lr=0.1), cfg, 0,
                           pt.lr_schedule(2, 0, 0.1), 2, device.autocast_for(torch.device("cpu"), "off"), on, 0)
        assert probe.layouts == [(on, on)] * 2
    assert device.channels_last_for("auto") is False and device.channels_last_for("on") is True


class FakeCuda:
    """Two visible GPUs, as ``torch.cuda`` reports them; records what is set."""

    def __init__(self, monkeypatch, current=0, count=2):
        self.current, self.set_devices, self.rng_set = current, [], []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: torch.full((4,), d, dtype=torch.uint8))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: self.rng_set.append((s.tolist(), d)))

    def set_device(self, d):
        self.current = torch.device(d).index
        self.set_devices.append(torch.device(d))


def test_an_explicit_gpu_outside_torchrun_is_the_one_used(monkeypatch):
    """``--device cuda:1`` in one process trains on cuda:1 and makes it current (it became cuda:0)."""
    for k in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(k, raising=False)
    cuda = FakeCuda(monkeypatch)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert device.setup_device("cuda:1", distributed=True) == torch.device("cuda", 1)
    assert cuda.set_devices == [torch.device("cuda", 1)] and torch.backends.cudnn.benchmark is True
    assert device.setup_device("cuda") == torch.device("cuda", 1)  # plain cuda: the current one
    with pytest.raises(ConfigError, match="sees 2 GPU"):
        device.setup_device("cuda:2")


@pytest.mark.parametrize("local,visible,expected", [(0, 8, 0), (3, 8, 3), (1, 1, 0), (5, 1, 0), (1, 2, 1)])
def test_a_rank_takes_its_local_gpu_or_the_only_one_it_sees(local, visible, expected):
    assert dist.rank_gpu(local, visible, 8) == expected


def test_more_ranks_than_visible_gpus_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"local rank 2 of 4 on this node, but only 2 GPU\(s\) are visible"):
        dist.rank_gpu(2, 2, 4)


def test_under_torchrun_a_process_that_sees_one_gpu_uses_cuda_0(monkeypatch):
    """A launcher that sets ``CUDA_VISIBLE_DEVICES`` per rank leaves LOCAL_RANK 1 with one visible GPU: it is
    cuda:0 there (cuda:1 would not exist), and the NCCL group is formed on it. torchrun sets LOCAL_RANK and
    LOCAL_WORLD_SIZE per worker (``torch/distributed/elastic/agent/server/local_elastic_agent.py``)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cuda = FakeCuda(monkeypatch, count=1)
    groups = []
    monkeypatch.setattr(dist.td, "is_initialized", lambda: bool(groups))
    monkeypatch.setattr(dist.td, "init_process_group", lambda backend, **kw: groups.append((backend, kw["device_id"])))
    assert device.setup_device("cuda", distributed=True) == torch.device("cuda", 0)
    assert cuda.set_devices == [torch.device("cuda", 0)] and groups == [("nccl", torch.device("cuda", 0))]


def test_checkpoints_hold_only_this_ranks_gpu_rng_state(monkeypatch):
    """A rank on cuda:1 saves cuda:1's generator only, and a process that sees one GPU resumes from it;
    an older checkpoint with every GPU's state restores the entry of the GPU in use."""
    cuda = FakeCuda(monkeypatch, current=1)
    state = checkpoint.rng_state()
    assert [s.tolist() for s in state["cuda"]] == [[1] * 4]
    blob = torch.load(__import__("io").BytesIO(checkpoint.to_bytes(state)), weights_only=True)
    cuda.current = 0  # resumed where only one GPU is visible
    checkpoint.set_rng_state(blob)
    assert cuda.rng_set == [([1] * 4, 0)]
    old = {**state, "cuda": [torch.full((4,), 7, dtype=torch.uint8), torch.full((4,), 9, dtype=torch.uint8)]}
    cuda.current, cuda.rng_set[:] = 1, []
    checkpoint.set_rng_state(old)
    assert cuda.rng_set == [([9] * 4, 1)]


def test_compile_caches_go_to_a_writable_folder_when_home_is_read_only(tmp_path):
    """Inductor's cache is ``TORCHINDUCTOR_CACHE_DIR`` (``torch/_inductor/runtime/cache_dir_utils.py``,
    ``cache_dir``), Triton's ``TRITON_CACHE_DIR`` or ``$TRITON_HOME/.triton`` (``triton/knobs.py``,
    ``cache_knobs``): all three are set under the first writable candidate, what the user set is kept."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {"HOME": str(blocker / "home"), "TMPDIR": str(tmp_path / "tmp")}  # HOME cannot be created
    done = device.prepare_compile(torch.device("cpu"), env)
    root = tmp_path / "tmp" / f"jetlib-{__import__('os').getuid()}"
    assert done == {"TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
                    "TRITON_CACHE_DIR": str(root / "triton" / "cache"), "TRITON_HOME": str(root / "triton")}
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    assert not torch.backends.mkldnn.enabled  # oneDNN's conv backward crashes under inductor on CPU
    mine = {**env, "JETLIB_CACHE": str(tmp_path / "jc"), "TORCHINDUCTOR_CACHE_DIR": "/mine", "TRITON_CACHE_DIR": "",
            "TRITON_HOME": ""}
    device.prepare_compile(torch.device("cpu"), mine)
    assert mine["TORCHINDUCTOR_CACHE_DIR"] == "/mine" and mine["TRITON_CACHE_DIR"] == str(tmp_path / "jc/triton/cache")
    with pytest.raises(ConfigError, match="writable cache folder"):
        device.prepare_compile(torch.device("cpu"), {"HOME": str(blocker / "h"), "TMPDIR": str(blocker / "t")})


def test_compile_without_a_compiler_is_one_line(monkeypatch):
    """Triton builds its launcher with ``$CC`` or gcc/clang (``triton/runtime/build.py``, ``_find_compiler``)."""
    monkeypatch.setattr(device.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"C compiler \(gcc or clang, or \$CC\)"):
        device.prepare_compile(torch.device("cuda"), {"HOME": "/tmp"})
    with pytest.raises(ConfigError, match=r"C\+\+ compiler"):
        device.prepare_compile(torch.device("cpu"), {"HOME": "/tmp"})


@pytest.mark.slow
def test_inductor_compiles_with_its_caches_in_jetlib_cache_and_home_unwritable(tmp_path):
    """A real ``torch.compile`` on CPU (inductor builds C++) after :func:`prepare_compile`, in a process
    whose HOME and TMPDIR cannot be created: the compiled code runs and inductor's cache lands in
    ``$JETLIB_CACHE/inductor``. (The read-only root of a pod is the Docker test's to show.)"""
    import os
    import subprocess

    blocker = tmp_path / "file"
    blocker.write_text("")
    code = ("import torch; from jetlib.device import prepare_compile; prepare_compile(torch.device('cpu')); "
            "f = torch.compile(lambda x: (x.relu() * 2).sum()); x = torch.randn(64); "
            "assert torch.allclose(f(x), (x.relu() * 2).sum()); print('ok')")
    env = {**os.environ, "HOME": str(blocker / "home"), "TMPDIR": str(blocker / "tmp"),
           "JETLIB_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(Path(JETLIB).parent)}
    for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TRITON_HOME"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert (tmp_path / "cache" / "inductor" / "fxgraph").is_dir()
