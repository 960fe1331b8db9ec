"""The cpu presets' speed choices (docs/speed.md): bf16 autocast only where the CPU has native bf16."""

import pytest

from jetlib import finetune, pretrain
from jetlib.device import cpu_amp


@pytest.mark.parametrize(("flags", "amp"), [
    ("fpu sse avx2 avx512f avx512_bf16 avx512_vnni", "bf16"),  # AMD Zen 4, Intel Cooper Lake
    ("fpu avx2 avx512f amx_bf16 amx_tile", "bf16"),  # Intel Sapphire Rapids
    ("fpu sse avx2 avx512f avx512bw", "off"),  # AVX-512 without BF16: emulated, slower
    ("fp asimd bf16", "off"),  # an ARM flag list: not an x86 native-bf16 flag this rule knows
])
def test_cpu_amp_is_bf16_only_with_a_native_bf16_flag(tmp_path, flags, amp):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_amp(str(info)) == amp


def test_without_cpu_flags_the_presets_stay_fp32(tmp_path):
    assert cpu_amp(str(tmp_path / "no-such-file")) == "off"  # macOS, Windows: no /proc/cpuinfo


def test_the_cpu_presets_use_this_machines_rule_and_the_gpu_preset_keeps_its_default():
    here = cpu_amp()
    assert pretrain.make_config("cpu").amp == here
    assert finetune.make_config("cpu", task="cls", mode="finetune", label_fraction=0.1).amp == here
    assert pretrain.make_config("gpu").amp == "auto"  # bf16 on CUDA, decided by the device
    assert pretrain.make_config("cpu", amp="off").amp == "off"  # still a setting a user can override


def test_scoring_on_the_cpu_is_float32_even_for_a_bf16_trained_model():
    """evaluate and predict score through inference_autocast: a cpu-preset model's bf16 is a training
    speed-up only, so its scores on the CPU are float32, as its exported ONNX graph computes them."""
    import torch

    from jetlib.device import autocast_for, inference_autocast

    lin = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    with autocast_for(torch.device("cpu"), "bf16")():
        assert lin(x).dtype == torch.bfloat16  # what training runs under
    with inference_autocast(torch.device("cpu"), "bf16")():
        out = lin(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, lin(x))
