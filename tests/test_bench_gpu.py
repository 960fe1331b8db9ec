"""benchmarks/gpu.py: its --smoke run on CPU prints every measurement as a JSON line,
and the FLOPs it divides by are the ones torch's FlopCounterMode counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_flops_per_jet_of_the_gpu_resnet15_match_the_stated_cost():
    """0.925 GFLOP per 125x125 forward (462 M MACs); SimCLR's 2 views x (forward + backward) ~ 5.5 GFLOP."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu

    from jetlib.models.resnet import ResNet, ResNetConfig
    from jetlib.pretrain import make_config

    with FlopCounterMode(display=False) as counter:
        ResNet(ResNetConfig()).forward_features(torch.rand(1, 3, 125, 125))
    assert counter.get_total_flops() == pytest.approx(0.925e9, rel=2e-3)
    step = gpu.flops_per_jet(ResNetConfig(), make_config("gpu"), torch.device("cpu"))
    assert step == pytest.approx(6 * 0.925e9, rel=0.01)


@pytest.mark.slow
def test_smoke_run_prints_every_measurement(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={**env, "PYTHONPATH": str(ROOT)},
                          cwd=tmp_path)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, ([x for x in lines if "error" in x], proc.stderr[-2000:])
    by = {}
    for line in lines:
        by.setdefault(line["measure"], []).append(line)
    assert list(by) == ["env", "loader", "step", "sync_free", "pretrain", "finetune", "summary"]
    env_ = by["env"][0]
    assert env_["flops_per_jet"] > 0 and env_["device_type"] == "cpu" and env_["train_jets"] > 0
    assert {x["mode"] for x in by["loader"]} == {"stream", "resident"}
    assert all(x["jets_per_s"] > 0 for x in by["loader"])
    combos = {(x["batch_size"], x["compiled"], x["channels_last"]) for x in by["step"]}
    assert combos == {(b, c, cl) for b in (8, 16) for c in (False, True) for cl in (False, True)}
    measured = [x for x in by["step"] if "skipped" not in x]
    assert len(measured) == 2 and all(x["jets_per_s"] > 0 and x["steps"] >= 5 for x in measured)
    pre = by["pretrain"][0]
    assert pre["ok"] and len(pre["epochs"]) == 2
    assert pre["resumed"] == pre["killed_after_checkpoint"]  # a kill is followed by a resume
    assert 0 <= by["finetune"][0]["test_roc_auc"] <= 1
    summary = by["summary"][0]
    assert summary["best_step"]["jets_per_s"] == pytest.approx(max(x["jets_per_s"] for x in measured), abs=0.05)
    assert summary["loader_margin"] > 0
