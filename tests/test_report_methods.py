"""The report of a study with several pretraining methods: cells per (mode, method), keys, the section, collapse.

Results are fabricated (tests/report/fake.py) with chosen numbers, so every mean, std and gain
below is worked out by hand from them.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from jetlib import records
from jetlib.evaluate import origin_of
from jetlib.report import build_report
from jetlib.report.missing import grid_holes
from jetlib.report.stats import (
    aggregate,
    cell_mode,
    method_of,
    mode_rank,
    result_mode,
    split_mode,
    spread_source,
    summary,
)
from tests.report.fake import fake_result, write_results

ROOT = Path(__file__).resolve().parents[1]


def result(task, mode, seed, value, pseed=None, method=None, fraction=0.1):
    """A fake result; a pretrained one records its encoder's ``method`` (None: a result from before methods)."""
    r = fake_result(task, mode, fraction, seed, value, pretrain_seed=pseed)
    if method is not None:
        r["origin"]["method"] = method
        r["origin"]["encoder_sha256"] = method[0] * 64  # another pretraining run, another encoder
    # another model per method: the report counts a result with a model and dataset it has seen once
    r["model"]["sha256"] = (r["model"]["sha256"][:56] + (method or "simclr").encode().hex())[:64].ljust(64, "0")
    return r


# AUC at 10% labels: two fine-tuning seeds x two pretraining seeds per method
SIMCLR = {(0, 0): 0.70, (0, 1): 0.72, (1, 0): 0.74, (1, 1): 0.76}  # (pretrain seed, seed): AUC
VICREG = {(0, 0): 0.80, (0, 1): 0.82, (1, 0): 0.84, (1, 1): 0.86}
SCRATCH = [0.60, 0.64]
VGG = [0.75, 0.77]
MAE_VICREG, MAE_SCRATCH = [9.0, 11.0], [12.0, 14.0]  # reg at 10%, pretraining seed 0


def two_methods() -> list[dict]:
    out = [result("cls", "finetune", s, v, p, "simclr") for (p, s), v in SIMCLR.items()]
    out += [result("cls", "finetune", s, v, p, "vicreg") for (p, s), v in VICREG.items()]
    out += [result("cls", "scratch", s, v) for s, v in enumerate(SCRATCH)]
    out += [result("cls", "vgg", s, v) for s, v in enumerate(VGG)]
    out += [result("reg", "finetune", s, v, 0, "vicreg") for s, v in enumerate(MAE_VICREG)]
    out += [result("reg", "scratch", s, v) for s, v in enumerate(MAE_SCRATCH)]
    return out


def pretrain_run(folder, method: str, seed: int, std_mean: float, rank: float, collapsed: bool) -> None:
    """A pretraining run.json as jetlib.pretrain writes it (final epoch's embedding stats; collapse when so)."""
    emb = {"std_mean": std_mean, "std_min": std_mean / 2, "effective_rank": rank, "collapsed": collapsed}
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "format": records.PRETRAIN, "config": {"seed": seed, "method": method},
        "method": {"name": method, "params": {}}, "final": {"epoch": 2, "loss": 1.5, "embedding": emb},
        **({"collapse": {"epoch": 2, **emb}} if collapsed else {})}))
    (folder / "metrics.json").write_text(json.dumps({"epochs": [{"epoch": e, "embedding": {**emb, "collapsed":
                                                                                             collapsed and e > 0}}
                                                                for e in range(3)]}))


def test_cells_are_per_mode_and_method_and_simclr_keeps_the_bare_mode():
    cells = aggregate(two_methods())
    assert cells[("auc", "cls", "finetune", 0.1)].values == list(SIMCLR.values())
    assert cells[("auc", "cls", "finetune_vicreg", 0.1)].values == list(VICREG.values())
    assert cells[("auc", "cls", "scratch", 0.1)].values == SCRATCH  # method-free: one cell, not one per method
    assert not [k for k in cells if "simclr" in k[2]]
    assert (cell_mode("finetune", "byol"), cell_mode("scratch", "byol"), cell_mode("linear", "simclr")) == \
        ("finetune_byol", "scratch", "linear")
    assert split_mode("linear_barlowtwins") == ("linear", "barlowtwins") and split_mode("vgg") == ("vgg", None)
    assert sorted(["vgg", "finetune_vicreg", "linear", "finetune", "finetune_byol"], key=mode_rank) == \
        ["finetune", "finetune_byol", "finetune_vicreg", "linear", "vgg"]


def test_summary_keys_gain_the_method_and_simclr_keys_stay():
    flat = summary(aggregate(two_methods()))
    # SimCLR: mean (0.70 + 0.72 + 0.74 + 0.76) / 4; deviations -0.03, -0.01, 0.01, 0.03 -> var 0.002 / 3
    assert flat["cls_auc_finetune_f0.1_mean"] == pytest.approx(0.73)
    assert flat["cls_auc_finetune_f0.1_std"] == pytest.approx(math.sqrt(0.002 / 3))
    assert flat["cls_auc_finetune_vicreg_f0.1_mean"] == pytest.approx(0.83)
    assert flat["cls_auc_finetune_vicreg_f0.1_std"] == pytest.approx(math.sqrt(0.002 / 3))
    assert flat["cls_auc_finetune_vicreg_f0.1_n"] == 4
    # gains over scratch (mean 0.62, var 0.0008) and VGG (mean 0.76, var 0.0002); sigma = sqrt(sa2/4 + sb2/2)
    assert flat["cls_auc_gain_finetune_vicreg_vs_scratch_f0.1"] == pytest.approx(0.83 - 0.62)
    assert flat["cls_auc_gain_finetune_vicreg_vs_scratch_f0.1_sigma"] == pytest.approx(
        math.sqrt(0.002 / 3 / 4 + 0.0008 / 2))
    assert flat["cls_auc_gain_finetune_vs_vgg_f0.1"] == pytest.approx(0.73 - 0.76)
    assert flat["cls_auc_gain_finetune_vicreg_vs_vgg_f0.1_sigma"] == pytest.approx(
        math.sqrt(0.002 / 3 / 4 + 0.0002 / 2))
    # mass MAE, lower is better: the gain is scratch's MAE (13) minus VICReg's (10)
    assert flat["reg_mae_finetune_vicreg_f0.1_mean"] == pytest.approx(10.0)
    assert flat["reg_mae_gain_finetune_vicreg_vs_scratch_f0.1"] == pytest.approx(3.0)
    assert flat["reg_mae_gain_finetune_vicreg_vs_scratch_f0.1_sigma"] == pytest.approx(math.sqrt(2 / 2 + 2 / 2))
    assert not [k for k in flat if "simclr" in k]
    assert "reg_mae_finetune_f0.1_mean" not in flat  # no SimCLR result for reg


def test_per_mode_tables_and_curves_group_two_methods_apart():
    """The confusion tables, ROC panels and mass-bias curves group by result_mode: two methods' fine-tuned
    results never pool into one 'finetune' row or curve."""
    modes = [result_mode(r) for r in two_methods()]
    assert {"finetune", "finetune_vicreg", "scratch", "vgg"} <= set(modes)
    assert result_mode(result("cls", "scratch", 0, 0.6)) == "scratch"
    assert result_mode(result("cls", "finetune", 0, 0.7, pseed=0)) == "finetune"  # no method recorded: SimCLR


def test_a_result_without_a_method_is_simclr():
    old = [result("cls", "finetune", s, v, p) for (p, s), v in SIMCLR.items()]
    assert all("method" not in r["origin"] for r in old)
    assert {method_of(r) for r in old} == {"simclr"} and method_of(result("cls", "scratch", 0, 0.6)) is None
    mixed = old[:2] + [result("cls", "finetune", s, v, p, "simclr") for (p, s), v in list(SIMCLR.items())[2:]]
    assert summary(aggregate(mixed)) == summary(aggregate(old))
    assert aggregate(mixed)[("auc", "cls", "finetune", 0.1)].n == 4


def test_origin_of_carries_the_method_only_when_recorded():
    blob = {"mode": "finetune", "origin": {"init": "/r/pretrain-vicreg-s0", "encoder_sha256": "a" * 64,
                                           "pretrain_seed": 0, "method": "vicreg"}}
    assert origin_of(blob)["method"] == "vicreg"
    del blob["origin"]["method"]
    assert "method" not in origin_of(blob)


def test_spread_counts_pretraining_runs_per_method():
    assert spread_source(two_methods()) == \
        "2 fine-tuning seeds and 2 pretraining runs per method (pretrained modes pool both)"
    only = [r for r in two_methods() if method_of(r) in (None, "vicreg") and r["task"] == "cls"]
    assert spread_source(only) == "2 fine-tuning seeds and 2 pretraining runs (pretrained modes pool both)"


def test_a_hole_of_one_method_is_named_with_its_method():
    results = [r for r in two_methods() if not (method_of(r) == "vicreg" and r["task"] == "cls"
                                                 and r["origin"]["pretrain_seed"] == 1 and r["seed"] == 1)]
    holes = [h for h in grid_holes(results) if h.startswith("no result for cls finetune")]
    assert holes == ["no result for cls finetune at 10% labels, seed 1, pretraining run vicreg-s1"]


def test_the_section_compares_every_method_and_shows_collapse(tmp_path):
    run = tmp_path / "run"
    write_results(run / "results", two_methods())
    pretrain_run(run / "pretrain-simclr-s0", "simclr", 0, 0.04, 180.0, False)
    pretrain_run(run / "pretrain-vicreg-s0", "vicreg", 0, 0.001, 1.2, True)
    report = build_report(str(run))
    md = report.markdown
    assert "## Which pretraining?" in md
    assert "2 pretraining methods (simclr, vicreg)" in md
    # the headline's verdict rule: +0.21 over scratch, sigma sqrt(0.002/12 + 0.0008/2) = 0.0238, is a gain
    assert ("ROC AUC (higher is better), fine-tuned vicreg encoder vs the same network from scratch: pretraining "
            "helps at 10% of the labels (Δ = +0.210 ± 0.024).") in md
    # VICReg vs VGG: +0.07, sigma sqrt(0.002/12 + 0.0002/2) = 0.0163
    assert ("ROC AUC (higher is better), fine-tuned vicreg encoder vs the VGG + SE baseline: pretraining helps at "
            "10% of the labels (Δ = +0.070 ± 0.016).") in md
    # SimCLR vs VGG: -0.03 with sigma sqrt(0.002/12 + 0.0001) = 0.0163: a hint of a loss (1.8 sigma)
    assert "fine-tuned simclr encoder vs the VGG + SE baseline: a hint of a loss (1–2σ) at 10% of the labels" in md
    # the side-by-side table: the best mean at 10% is VICReg's
    assert "| ROC AUC ↑ | 10% | 0.620 ± 0.028 (2) | 0.760 ± 0.014 (2) | 0.730 ± 0.026 (4) | 0.830 ± 0.026 (4) | " \
           "vicreg |" in md
    assert "| mass MAE (GeV) ↓ | 10% | 13.00 ± 1.41 (2) | — | — | 10.00 ± 1.41 (2) | vicreg |" in md
    assert "1 of 2 pretraining runs ended with a collapsed embedding (pretrain-vicreg-s0)" in md
    assert "| pretrain-vicreg-s0 | vicreg | 0 | 2 | 1.5 | 0.0010 | 0.0005 | 1.2 | yes | 1, 2 |" in md
    assert "| pretrain-simclr-s0 | simclr | 0 | 2 | 1.5 | 0.0400 | 0.0200 | 180.0 | no | — |" in md
    # the headline stays SimCLR's, as in a study without methods
    assert all("vicreg" not in s for s in report.headline)
    assert report.summary["cls_auc_gain_finetune_vicreg_vs_scratch_f0.1"] == pytest.approx(0.21)


def test_one_method_keeps_the_report_as_it_was(tmp_path):
    simclr = [r for r in two_methods() if method_of(r) in (None, "simclr")]
    write_results(tmp_path / "a" / "results", simclr)
    report = build_report(str(tmp_path / "a"), write=False)
    assert "One pretraining method in this study (simclr)" in report.markdown
    assert "pretraining methods (" not in report.markdown and "encoder vs the" not in report.markdown.split(
        "## Which pretraining?")[1].split("\n## ")[0]
    assert not [k for k in report.summary if "simclr" in k or "vicreg" in k]
    write_results(tmp_path / "b" / "results", [r for r in simclr if r["mode"] != "finetune"])
    assert "Which pretraining?" not in build_report(str(tmp_path / "b"), write=False).markdown


def test_the_study_benchmark_judges_each_method_as_the_report_does():
    """benchmarks/study.py --methods: one method's line holds its results and the shared baselines only, and its
    verdicts are the report's (the same Comparison, the same numbers as the summary above)."""
    spec = importlib.util.spec_from_file_location("study_bench", ROOT / "benchmarks" / "study.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    vicreg = bench.of_method(two_methods(), "vicreg")
    assert {(r["mode"], method_of(r)) for r in vicreg} == {("finetune", "vicreg"), ("scratch", None), ("vgg", None)}
    verdicts = bench.report_verdicts(vicreg, "vicreg")
    assert verdicts["cls_auc@0.1_vs_scratch"] == {"delta": "+0.210 ± 0.024", "verdict": "gain"}
    assert verdicts["reg_mae@0.1_vs_scratch"] == {"delta": "-3.00 ± 1.41", "verdict": "gain"}  # lower is better
    assert bench.report_verdicts(bench.of_method(two_methods(), "simclr"), "simclr")["cls_auc@0.1_vs_vgg"] == \
        {"delta": "-0.030 ± 0.016", "verdict": "hint of a loss"}
    assert bench.summarise(vicreg)["cls"]["finetune"]["0.1"]["mean"] == pytest.approx(0.83)
