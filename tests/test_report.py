"""The report on fabricated result files: verdict wording follows the numbers, gaps are named, bad input is one line."""

import json
import math

import numpy as np
import pytest

from jetlib import records
from jetlib.errors import ConfigError
from jetlib.report import build_report
from jetlib.report.stats import Agg, Comparison, aggregate, comparisons, summary
from tests.conftest import run_cli
from tests.report.fake import fake_result, study, write_results

F = (0.1, 1.0)


def make(tmp_path, values, name="run"):
    run = tmp_path / name
    write_results(run / "results", study(values))
    return run


def sentence(report, metric_label: str, base_label: str) -> str:
    hits = [s for s in report.headline if s.startswith(metric_label) and base_label in s]
    assert len(hits) == 1, report.headline
    return hits[0]


def test_headline_calls_a_loss_a_loss_when_scratch_wins(tmp_path):
    run = make(tmp_path, {("cls", "finetune", 0.1): [0.70, 0.71, 0.69], ("cls", "scratch", 0.1): [0.80, 0.81, 0.79]})
    report = build_report(str(run), write=False)
    text = sentence(report, "ROC AUC", "from scratch")
    assert "pretraining is a loss at 10% of the labels" in text
    assert "Δ = -0.100 ± 0.008" in text  # sigma = sqrt(2 * 0.01^2 / 3)
    assert "helps" not in text


def test_headline_flips_when_the_numbers_flip(tmp_path):
    run = make(tmp_path, {("cls", "finetune", 0.1): [0.80, 0.81, 0.79], ("cls", "scratch", 0.1): [0.70, 0.71, 0.69]})
    report = build_report(str(run), write=False)
    text = sentence(report, "ROC AUC", "from scratch")
    assert "pretraining helps at 10% of the labels (Δ = +0.100 ± 0.008)" in text
    assert "loss" not in text
    assert "In short, over 2 comparisons (metric × label fraction × baseline), pretraining helps in 2." in report.html


def test_a_gain_smaller_than_its_spread_is_no_significant_difference(tmp_path):
    run = make(tmp_path, {("cls", "finetune", 0.1): [0.70, 0.80, 0.75], ("cls", "scratch", 0.1): [0.74, 0.68, 0.77],
                          ("reg", "finetune", 0.1): [10.0, 10.2], ("reg", "scratch", 0.1): [12.0, 12.2]})
    report = build_report(str(run), write=False)
    assert "no significant difference at 10% of the labels" in sentence(report, "ROC AUC", "from scratch")
    # lower MAE is better: a smaller MAE after pretraining is a gain
    assert "pretraining helps at 10%" in sentence(report, "mass MAE", "from scratch")


def test_verdict_thresholds_and_one_seed():
    def cmp(a, b):
        return Comparison("auc", 0.1, "finetune", "scratch", Agg(a), Agg(b))

    # both sides: std sqrt(2), n 2, so sigma = sqrt(2/2 + 2/2) = sqrt(2)
    assert cmp([1.0, 3.0], [0.0, 2.0]).sigma == pytest.approx(math.sqrt(2))
    assert cmp([1.0, 3.0], [0.0, 2.0]).verdict == "no significant difference"  # 0.71 sigma
    assert cmp([2.5, 4.5], [0.0, 2.0]).verdict == "hint of a gain"  # 1.77 sigma
    assert cmp([3.5, 5.5], [0.0, 2.0]).verdict == "gain"  # 2.47 sigma
    assert cmp([0.0, 2.0], [2.5, 4.5]).verdict == "hint of a loss"
    assert cmp([0.0, 2.0], [3.5, 5.5]).verdict == "loss"
    assert cmp([1.0], [0.0, 2.0]).verdict == "no error bar"


def test_every_sentence_and_table_number_is_recomputed_from_the_files(tmp_path):
    rng = np.random.default_rng(0)
    values = {(t, m, f): list(rng.uniform(0.6, 0.9, 3) if t == "cls" else rng.uniform(8, 12, 3))
              for t, modes in (("cls", ("finetune", "scratch", "vgg")), ("reg", ("finetune", "scratch")))
              for m in modes for f in F}
    run = make(tmp_path, values)
    report = build_report(str(run))
    for (task, mode, f), vs in values.items():
        key = f"{task}_{'auc' if task == 'cls' else 'mae'}_{mode}_f{f:g}"
        assert report.summary[f"{key}_mean"] == pytest.approx(np.mean(vs), abs=1e-12)
        assert report.summary[f"{key}_std"] == pytest.approx(np.std(vs, ddof=1), abs=1e-12)
        fmt = ".3f" if task == "cls" else ".2f"
        assert f"{np.mean(vs):{fmt}} ± {np.std(vs, ddof=1):{fmt}} (3)" in report.html
    for base in ("scratch", "vgg"):
        a, b = values[("cls", "finetune", 0.1)], values[("cls", base, 0.1)]
        gain = np.mean(a) - np.mean(b)
        sigma = math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3)
        assert report.summary[f"cls_auc_gain_finetune_vs_{base}_f0.1"] == pytest.approx(gain)
        assert report.summary[f"cls_auc_gain_finetune_vs_{base}_f0.1_sigma"] == pytest.approx(sigma)
        assert f"{gain:+.3f} ± {sigma:.3f}" in report.html
    assert "<td>10 (fraction)</td>" in report.html and "<td>40 (full)</td>" in report.html  # validation jets
    written = json.loads((run / "report" / "summary.json").read_text())
    assert written == report.summary and all(math.isfinite(v) for v in written.values())


def test_summary_keys_are_the_same_for_the_same_grid(tmp_path):
    a = make(tmp_path, {("cls", "finetune", 0.1): [0.7, 0.8], ("cls", "scratch", 0.1): [0.6, 0.65]}, "a")
    b = make(tmp_path, {("cls", "finetune", 0.1): [0.9, 0.5], ("cls", "scratch", 0.1): [0.75, 0.7]}, "b")
    ka, kb = build_report(str(a), write=False).summary, build_report(str(b), write=False).summary
    assert set(ka) == set(kb) and "cls_auc_finetune_f0.1_mean" in ka and "cls_rej50_scratch_f0.1_std" in ka


def test_spread_over_pretraining_seeds_is_pooled_and_said(tmp_path):
    results = [fake_result("cls", "finetune", 0.1, s, 0.7 + 0.01 * s + 0.05 * p, pretrain_seed=p)
               for p in (0, 1) for s in (0, 1)]
    results += [fake_result("cls", "scratch", 0.1, s, 0.6 + 0.01 * s) for s in (0, 1)]
    write_results(tmp_path / "run", results)
    report = build_report(str(tmp_path / "run"), write=False)
    pooled = [0.70, 0.71, 0.75, 0.76]
    assert report.summary["cls_auc_finetune_f0.1_n"] == 4
    assert report.summary["cls_auc_finetune_f0.1_std"] == pytest.approx(np.std(pooled, ddof=1))
    assert "2 fine-tuning seeds and 2 pretraining runs" in report.html
    assert not [m for m in report.missing if m.startswith("no result")]


def test_a_copied_result_file_is_counted_once(tmp_path):
    results = study({("cls", "finetune", 0.1): [0.7, 0.8], ("cls", "scratch", 0.1): [0.6, 0.7]})
    write_results(tmp_path / "run" / "results", results)
    write_results(tmp_path / "run" / "copy", results[:1])
    report = build_report(str(tmp_path / "run"), write=False)
    assert report.summary["cls_auc_finetune_f0.1_n"] == 2
    assert report.summary["cls_auc_finetune_f0.1_mean"] == pytest.approx(0.75)


def test_pretraining_runs_without_a_seed_are_told_apart_by_their_encoder(tmp_path):
    results = [fake_result("cls", "finetune", 0.1, s, 0.7 + 0.1 * p, pretrain_seed=p) for p in (0, 1) for s in (0, 1)]
    for r in results:
        r["origin"] = {**r["origin"], "pretrain_seed": None, "encoder_sha256": f"{r['origin']['pretrain_seed']}" * 64}
    write_results(tmp_path / "run", results[:3])  # the second pretraining run lacks seed 1
    report = build_report(str(tmp_path / "run"), write=False)
    assert "2 fine-tuning seeds and 2 pretraining runs" in report.html
    assert report.missing[0] == "no result for cls finetune at 10% labels, seed 1, pretraining run 11111111"


def test_undefined_metrics_show_their_reason_not_a_number(tmp_path):
    results = study({("cls", "finetune", 0.1): [0.7, 0.8], ("cls", "scratch", 0.1): [0.6, 0.7]})
    for r in results:
        if r["mode"] == "scratch":
            r["scalars"]["roc_auc"] = r["classification"]["roc_auc"] = None
            r["classification"]["undefined"] = {"roc_auc": "one class in the test split"}
    write_results(tmp_path / "run", results)
    report = build_report(str(tmp_path / "run"), write=False)
    assert "undefined (seed 0: one class in the test split; seed 1: one class in the test split)" in report.html
    assert "cls_auc_scratch_f0.1_mean" not in report.summary
    assert not [c for c in comparisons(aggregate(results)) if c.metric == "auc"]


def test_a_partial_run_names_what_is_missing(tmp_path):
    run = make(tmp_path, {("cls", "finetune", 0.1): [0.7, 0.8], ("cls", "scratch", 0.1): [0.6],
                          ("cls", "scratch", 1.0): [0.6, 0.7], ("cls", "finetune", 1.0): [0.8, 0.9]})
    (run / "cls-vgg-f0.1-s0" / "checkpoints").mkdir(parents=True)  # a step killed mid-way
    (run / "cls-vgg-f0.1-s0" / "checkpoints" / "latest.json").write_text("{}")
    (run / "pretrain-s0").mkdir()
    (run / "pretrain-s0" / "run.json").write_text(json.dumps({"format": records.PRETRAIN, "config": {}}))
    (run / "results" / "broken.json").write_text(json.dumps({"format": records.RESULT, "task": "cls"}))
    (run / "results" / "torn.json").write_text('{"format": "jetlib.res')
    report = build_report(str(run))
    assert "no result for cls scratch at 10% labels, seed 1" in report.missing
    assert any(m.startswith("unreadable: ") and "broken.json: a result file jetlib cannot read (mode is null" in m
               for m in report.missing)
    assert any(m.startswith("unreadable: ") and "torn.json: not a JSON object" in m for m in report.missing)
    assert any("cls-vgg-f0.1-s0 started but did not finish" in m for m in report.missing)
    assert any("pretrain-s0 has no encoder.pt" in m for m in report.missing)
    assert any(m.startswith("dataset /nonexistent") for m in report.missing)
    for line in report.missing:
        assert line.replace("<", "&lt;").replace(">", "&gt;") in report.html or line in report.html
    assert "What is missing" in report.markdown and "no result for cls scratch at 10% labels, seed 1" in report.markdown


def test_markdown_has_no_raw_html_and_the_page_fetches_nothing(tmp_path):
    run = make(tmp_path, {("cls", "finetune", 0.1): [0.7, 0.8], ("cls", "vgg", 0.1): [0.6, 0.7],
                          ("reg", "scratch", 0.1): [9.0, 11.0]})
    report = build_report(str(run))
    md = (run / "report" / "report.md").read_text()
    assert md == report.markdown and "<img" not in md and "<table" not in md and "<details" not in md
    assert "| metric | labels |" in md
    html = (run / "report" / "report.html").read_text()
    assert html == report.html and "<script" not in html and "http://" not in html and "https://" not in html
    srcs = html.split('src="')[1:]
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


@pytest.mark.slow  # CLI subprocesses: ~8 s of CPU
def test_an_empty_or_non_run_folder_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="nothing there"):
        build_report(str(tmp_path / "absent"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.json").write_text('{"a": 1}')
    with pytest.raises(ConfigError, match="no study outputs there"):
        build_report(str(tmp_path / "other"))
    res = run_cli("report", "--run", tmp_path / "other")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().count("\n") == 0 and "no study outputs there" in res.stderr
    assert not (tmp_path / "other" / "report").exists()  # nothing half-written


@pytest.mark.slow  # a CLI subprocess: ~9 s of CPU
def test_an_unreachable_store_exits_3(tmp_path):
    env = {"JETLIB_S3_ENDPOINT": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "JETLIB_S3_RETRIES": "1", "JETLIB_S3_CONNECT_TIMEOUT": "2"}
    res = run_cli("report", "--run", "s3://jetlib-nowhere/run", env=env)
    assert res.returncode == 3 and res.stdout == "" and "cannot reach object store" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a CLI subprocess: ~9 s of CPU
def test_cli_prints_one_json_line_with_paths_and_headline(tmp_path):
    run = make(tmp_path, {("cls", "finetune", 0.1): [0.80, 0.81], ("cls", "scratch", 0.1): [0.60, 0.61]})
    res = run_cli("report", "--run", run, "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    line = json.loads(res.stdout)
    assert line["html"] == str(tmp_path / "out" / "report.html") and (tmp_path / "out" / "report.html").exists()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["cls_auc_finetune_f0.1_mean"] == 0.805
    assert any("pretraining helps at 10%" in s for s in line["headline"])


@pytest.mark.s3
def test_an_s3_run_reads_like_a_local_one(tmp_path, s3_env):
    from jetlib.data.store import open_store

    results = study({("cls", "finetune", 0.1): [0.7, 0.8], ("cls", "scratch", 0.1): [0.6, 0.65],
                     ("reg", "finetune", 1.0): [9.0, 9.5]})
    write_results(tmp_path / "run" / "results", results)
    store = open_store(s3_env)
    for p in (tmp_path / "run").rglob("*.json"):
        store.put_file(p.relative_to(tmp_path / "run").as_posix(), p)
    local = build_report(str(tmp_path / "run"), write=False)
    remote = build_report(s3_env)
    assert remote.summary == local.summary and remote.summary == summary(aggregate(results))
    assert remote.out_uri == f"{s3_env}/report"
    assert json.loads(store.get_bytes("report/summary.json")) == remote.summary
    assert store.get_bytes("report/report.html").decode() == remote.html


@pytest.mark.parametrize("path,value,problem", [
    (("seed",), [1], "seed is list, expected a whole number"),
    (("label_fraction",), "0.1", "label_fraction is str"),
    (("mode",), "../../x", "mode is str, expected finetune or linear or scratch or vgg"),
    (("scalars", "roc_auc"), "high", "scalars.roc_auc is str"),
    (("classification",), [1, 2], "classification is list"),
    (("classification", "roc"), "x", "classification.roc is str"),
    (("classification", "roc", "fpr"), "abc", "classification.roc.fpr is str"),
    (("classification", "confusion_matrix"), "x", "classification.confusion_matrix is str"),
    (("model",), "m", "model is str"),
    (("dataset",), 3, "dataset is int"),
    (("origin",), "o", "origin is str"),
    (("resources",), [], "resources is list"),
])
def test_a_result_with_a_wrong_typed_field_is_listed_as_unreadable(tmp_path, path, value, problem):
    """Each of these stopped the whole report with a traceback; now the file is named."""
    good = study({("cls", "finetune", 0.1): [0.8, 0.81], ("cls", "scratch", 0.1): [0.7, 0.71]})
    bad = fake_result("cls", "scratch", 0.1, 7, 0.72)
    doc = bad
    for k in path[:-1]:
        doc = doc[k]
    doc[path[-1]] = value
    (tmp_path / "run" / "results").mkdir(parents=True)
    for i, r in enumerate([*good, bad]):
        (tmp_path / "run" / "results" / f"r{i}.json").write_text(json.dumps(r))
    report = build_report(str(tmp_path / "run"), write=False)
    lines = [m for m in report.missing if m.startswith("unreadable: ") and "r4.json" in m]
    assert len(lines) == 1 and f"a result file jetlib cannot read ({problem}" in lines[0], report.missing
    assert "cls_auc_scratch_f0.1_mean" in report.summary  # the readable results still make the report
