"""The report of a tiny but real study run, and that page opened in a real headless browser.

The run (pretraining; finetune, scratch and VGG classification; finetune and scratch
regression; two label fractions, two seeds; ~30 s on 2 idle cores) is built once for
the module. The browser test drives Debian's chromium through chromedriver with
selenium; in CI (``CI=true``) it must run, locally it skips when chromium is absent.
"""

import json
import math
import os
import shutil
from html import escape
from pathlib import Path

import numpy as np
import pytest

from jetlib.report import build_report
from jetlib.study import training_dir
from tests.report.tiny_run import FRACTIONS, GRID, SEEDS, make_tiny_run

pytestmark = pytest.mark.slow

SECTIONS = ("headline", "fractions", "classification", "regression", "learning", "data", "encoder", "resources",
            "provenance", "missing")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    run, data = make_tiny_run(root)
    return Path(run), data, build_report(run)


def _results(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "results").glob("*.json"))]


def test_every_section_is_there_and_the_run_is_complete(tiny):
    run, _, report = tiny
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in report.html, sid
    # figures: fraction curves, ROC, regression, pretraining, fine-tuning, mean images, distributions, encoder maps
    assert report.html.count("<img ") == 8
    assert report.missing == []
    assert "Nothing: every (task, mode, label fraction, seed) combination found has a result" in report.html
    assert "pretrained" in report.html.split('id="encoder"')[1] and "scratch 100%" in report.html
    assert {p.name for p in (run / "report").iterdir()} == {"report.html", "report.md", "summary.json"}


def test_headline_numbers_equal_the_result_files(tiny):
    run, _, report = tiny
    results = _results(run)
    assert len(results) == len(GRID) * len(FRACTIONS) * len(SEEDS)
    for task, mode in GRID:
        for f in FRACTIONS:
            for name, key in (("auc", "roc_auc"), ("mae", "mae"), ("rej50", "rejection_at_eps_s_0.5")):
                vals = [r["scalars"][key] for r in results
                        if (r["task"], r["mode"], r["label_fraction"]) == (task, mode, f)]
                vals = [v for v in vals if v is not None and math.isfinite(v)]
                stem = f"{task}_{name}_{mode}_f{f:g}"
                if not vals:
                    assert f"{stem}_mean" not in report.summary
                    continue
                assert report.summary[f"{stem}_mean"] == pytest.approx(np.mean(vals), rel=1e-12)
                if len(vals) > 1:
                    assert report.summary[f"{stem}_std"] == pytest.approx(np.std(vals, ddof=1), rel=1e-12)
    table = report.html.split('id="headline"')[1].split("</table>")[0]
    for f in FRACTIONS:
        fin = [r["scalars"]["roc_auc"] for r in results if (r["task"], r["mode"], r["label_fraction"]) ==
               ("cls", "finetune", f)]
        assert f"{np.mean(fin):.3f} ± {np.std(fin, ddof=1):.3f} (2)" in table


def test_size_and_markdown_limits(tiny):
    _, _, report = tiny
    assert len(report.html.encode()) < 2_000_000
    assert len(report.markdown) < 400_000 and "<img" not in report.markdown
    assert all(isinstance(v, float) and math.isfinite(v) for v in report.summary.values())


def test_a_run_missing_steps_says_what_is_missing(tiny, tmp_path):
    run, _, _ = tiny
    part = tmp_path / "partial"
    shutil.copytree(run, part, ignore=shutil.ignore_patterns("report"))
    (part / "results" / "reg-scratch-f0.5-s1.json").unlink()  # evaluated result lost
    vgg, scratch = training_dir("", "cls", "vgg", 1, 1, 0), training_dir("", "reg", "scratch", 0.5, 1, 0)
    (part / vgg / "run.json").unlink()  # a step killed before it finished
    report = build_report(str(part), write=False, max_jets=16)
    assert "no result for reg scratch at 50% labels, seed 1" in report.missing
    assert any(f"/{scratch} (" in m and "not evaluated" in m for m in report.missing)
    assert any(f"/{vgg} started but did not finish" in m for m in report.missing)
    assert "reg_mae_scratch_f0.5_std" not in report.summary  # one seed left: no spread claimed


def _browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium and chromium-driver (.ci/run installs them)")
        pytest.skip("chromium / chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    return webdriver, Service


def test_the_page_renders_in_a_headless_browser(tiny, tmp_path):
    webdriver, Service = _browser()
    run, _, report = tiny
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    try:
        driver.get("about:blank")
        driver.get_log("performance")  # drain what the browser itself loaded at start-up (its new-tab page)
        driver.get((run / "report" / "report.html").as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        assert driver.title.startswith("jetlib study report")
        images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) == report.html.count("<img ") and all(ok and w > 0 for ok, w in images), images
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
        assert [u for u in urls if not u.startswith(("data:", "file:"))] == []
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        # as the Kubeflow UI shows it: the whole page in a sandboxed iframe (scripts allowed, no same-origin)
        frame = tmp_path / "kfp.html"
        frame.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe sandbox="allow-scripts" '
                         f'style="width:1260px;height:900px;border:0" srcdoc="{escape(report.html)}"></iframe>'
                         f"</body></html>")
        driver.get(frame.as_uri())
        driver.switch_to.frame(driver.find_element("tag name", "iframe"))
        framed = driver.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
        assert len(framed) == len(images) and min(framed) > 0
        assert driver.find_element("id", "headline").text.startswith("Does pretraining help?")
        driver.switch_to.default_content()
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        driver.get((run / "report" / "report.html").as_uri())
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(height, 16000))
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
    if os.environ.get("JETLIB_TEST_ARTIFACTS"):
        dest = Path(os.environ["JETLIB_TEST_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / "report.png")
        shutil.copy(run / "report" / "report.html", dest / "report.html")
