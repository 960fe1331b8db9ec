"""The report on hostile records: names that are Markdown, HTML or mathtext, malformed run records, hostile sizes.

Every string on the page comes from records anyone with write access to the bucket can write. report.md is
rendered here by GitHub's own Markdown parser (cmark-gfm through ``cmarkgfm``, with the autolink, table,
strikethrough and tag-filter extensions, and raw HTML let through so that any would show), and the HTML it
gives is read back element by element: a payload must come out as text, never as a link, image or tag.
Figure labels are read back from the figure's Text objects and from an SVG rendering with text kept as text
(``svg.fonttype: none``), where mathtext would have split a ``$...$`` label into glyph runs.
"""

import io
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import cmarkgfm
import matplotlib
import numpy as np
import pytest
from cmarkgfm.cmark import Options

from jetlib import monitor, records
from jetlib.report import build_report, figures
from jetlib.report.blocks import Bullets, Figure, Para, Pre, Section, Table
from jetlib.report.budget import HTML_LIMIT, MARKDOWN_LIMIT, fit
from jetlib.report.collect import Step
from jetlib.report.inference import DataPortrait
from jetlib.report.render import md_fence, md_text, to_html, to_markdown
from jetlib.report.stats import aggregate
from tests.report.fake import fake_result, write_results

# one name holding each kind of payload: mathtext, a Markdown image/link, a code fence, raw HTML
HOSTILE = "$x^2$](http://evil/x.png)```<img src=x onerror=alert(1)>"
# a folder name cannot hold "/": a javascript: link instead of an http one
FOLDER = "pre-$x^2$-![p](javascript:alert(1))-```-<img src=x onerror=alert(1)>"
BROKEN_MATH = r"$\frac$"  # matplotlib's mathtext raises on this: it stopped the whole report
FENCE_BREAK = "evil\n~~~~~\n<img src=x onerror=alert(2)>\n```\n[x](http://evil/y.png)"
MD_TAGS = {"h1", "h2", "p", "ul", "li", "strong", "em", "table", "thead", "tbody", "tr", "th", "td", "pre", "code"}


class _Elements(HTMLParser):
    """Tags, attributes and text of an HTML document, and the text inside <code>."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.code: list[str] = []
        self._in_code = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_code += tag == "code"

    def handle_endtag(self, tag):
        self._in_code -= tag == "code"

    def handle_data(self, data):
        (self.code if self._in_code else self.text).append(data)


def rendered(markdown: str) -> _Elements:
    """report.md as GitHub renders it, raw HTML allowed through so that any in the file would show."""
    exts = Options.CMARK_OPT_UNSAFE
    return _Elements(cmarkgfm.github_flavored_markdown_to_html(markdown, options=exts))


def assert_only_text(markdown: str) -> _Elements:
    doc = rendered(markdown)
    tags = {t for t, _ in doc.tags}
    assert tags <= MD_TAGS, f"Markdown made {tags - MD_TAGS}"
    assert not [a for _, attrs in doc.tags for a in attrs], "a Markdown element carries attributes"
    return doc


def result(mode, seed, value, method=None, **extra):
    r = fake_result("cls", mode, 0.1, seed, value, pretrain_seed=0 if mode == "finetune" else None)
    if method is not None:
        r["origin"]["method"] = method
    return {**r, **extra}


def pretraining(folder, method: str, epochs: int = 3) -> None:
    """A pretraining run.json and metrics.json as jetlib.pretrain writes them (the fields the report reads)."""
    emb = {"std_mean": 0.05, "std_min": 0.02, "effective_rank": 9.0, "collapsed": False}
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "format": records.PRETRAIN, "config": {"seed": 0, "method": method}, "method": {"name": method, "params": {}},
        "final": {"epoch": epochs - 1, "loss": 1.5, "embedding": emb}, "world_size": 1}))
    (folder / "metrics.json").write_text(json.dumps({"epochs": [
        {"epoch": e, "loss": 2.0 - 0.1 * e, "temperature": 0.1, "lr": 1e-3, "knn_accuracy": 0.6, "seconds": 1.0,
         "jets_per_s": 100.0, "embedding": emb} for e in range(epochs)]}))


def training(folder, **run) -> None:
    """A training run.json and metrics.json as jetlib.trainer.write_outputs writes them."""
    folder.mkdir(parents=True)
    body = {"format": records.MODEL, "task": "cls", "mode": "scratch", "label_fraction": 0.1, "seed": 0,
            "model": {"key": "model.pt", "sha256": "a" * 64}, "config": {}, "training": {}, "resources": {},
            "labels": {}, **run}
    (folder / "run.json").write_text(json.dumps(body))
    (folder / "metrics.json").write_text(json.dumps({"epochs": [{"epoch": e, "train_loss": 0.7, "val_loss": 0.69}
                                                                for e in range(2)]}))


def hostile_run(tmp_path):
    run = tmp_path / "run"
    results = [result("finetune", s, 0.8 + 0.01 * s, HOSTILE) for s in (0, 1)]
    results += [result("scratch", s, 0.7 + 0.01 * s, provenance={"host": HOSTILE, "packages": {FENCE_BREAK: "1"}})
                for s in (0, 1)]
    write_results(run / "results", results)
    (run / "results" / f"{FOLDER}.json").write_text(json.dumps({"format": records.RESULT, "task": HOSTILE}))
    pretraining(run / FOLDER, HOSTILE)
    return run


# --- report.md: escaped as carefully as report.html --------------------------------------------------------------

def test_markdown_from_hostile_names_has_no_link_image_or_html_and_shows_them_as_text(tmp_path):
    run = hostile_run(tmp_path)
    report = build_report(str(run))
    md = (run / "report" / "report.md").read_text()
    assert md == report.markdown
    doc = assert_only_text(md)
    text = "".join(doc.text).replace("\u2060", "")
    assert HOSTILE in text and FOLDER in text  # the names, literally, in the headline, tables and lists
    assert f"task is str, expected {' or '.join(('cls', 'reg'))}" in text
    # the package name that tried to close its code block stays inside it, whole
    assert FENCE_BREAK.replace("\n", "") in "".join(doc.code).replace("\n", "")
    outside = md.split("~~~~~~\n")[0::2]  # the text outside the one fenced block
    assert not [part for part in outside if "<img" in part or "](" in part.replace("\\](", "")]


def test_the_page_from_hostile_names_holds_no_tag_or_link_of_theirs(tmp_path):
    report = build_report(str(hostile_run(tmp_path)), write=False)
    page = _Elements(report.html)
    assert not {t for t, _ in page.tags} & {"script", "iframe", "object", "embed"}
    assert all(attrs["href"].startswith("#") for t, attrs in page.tags if t == "a")
    assert all(attrs["src"].startswith("data:image/png;base64,") for t, attrs in page.tags if t == "img")
    assert not [k for _, attrs in page.tags for k in attrs if k.startswith("on")]
    assert HOSTILE in "".join(page.text)


@pytest.mark.parametrize("text", [
    "[a](http://evil/x.png)", "![a](http://evil/x.png)", "<img src=x onerror=alert(1)>", "<http://evil>",
    "http://evil.com/x", "www.evil.com", "mail me@evil.com", "&lt;img src=x&gt;", "`code` **b** _i_ ~~s~~",
    "- item", "1. item", "2) item", "---", "# heading", "> quote", "| a | b |", "line\n<script>x</script>",
    "line\n```\ncode", "\\[a\\](b)", "a\x00b\x1bc",
])
def test_md_text_renders_literally(text):
    doc = assert_only_text(f"before\n\n{md_text(text)}\n\nafter")
    assert [t for t, _ in doc.tags] == ["p", "p", "p"]
    shown = "".join(doc.text).replace("\u2060", "").split("\n")[1]
    assert shown == " ".join("".join(c for c in text if c >= " " or c.isspace()).split())


def test_a_fence_no_line_of_its_text_can_close():
    text = "a\n~~~~\n~~~~~~~\n```\n<img src=x onerror=alert(1)>"
    doc = assert_only_text(md_fence(text) + "\n\nafter")
    assert "".join(doc.code) == text + "\n" and [t for t, _ in doc.tags] == ["pre", "code", "p"]


# --- figure labels are plain text ---------------------------------------------------------------------------------

@pytest.fixture
def drawn(monkeypatch):
    """Every matplotlib Figure the report draws, kept after it was rendered to PNG."""
    figs = []
    real = figures.to_uri

    def keep(fig, *args, **kwargs):
        uri = real(fig, *args, **kwargs)
        figs.append(fig)
        return uri

    monkeypatch.setattr(figures, "to_uri", keep)
    return figs


def svg_text(fig) -> list[str]:
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text; mathtext would split it in runs
        fig.savefig(buf, format="svg")
    return ["".join(el.itertext()) for el in ET.fromstring(buf.getvalue()).iter("{http://www.w3.org/2000/svg}text")]


def labels(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def test_method_names_in_figures_are_plain_text(drawn):
    results = [result("finetune", s, 0.8, "$x^2$") for s in (0, 1)] + [result("finetune", s, 0.75, BROKEN_MATH)
                                                                          for s in (0, 1)]
    results += [result("scratch", s, 0.7) for s in (0, 1)]
    assert figures.fraction_curves(aggregate(results)).startswith("data:image/png;base64,")
    assert figures.roc_panels(results).startswith("data:image/png;base64,")
    for fig in drawn:
        assert {"finetune_$x^2$", f"finetune_{BROKEN_MATH}"} <= {s.split(" (")[0] for s in labels(fig)}
        assert "finetune_$x^2$" in [s.split(" (")[0] for s in svg_text(fig)]


def test_folder_and_channel_names_in_figures_are_plain_text(drawn):
    steps = [Step(f"/run/{name}", {}, {"epochs": [{"epoch": e, "loss": 1.0 / (e + 1), "temperature": 0.1,
                                                  "lr": 1e-3, "knn_accuracy": 0.6} for e in range(2)]})
             for name in (FOLDER, BROKEN_MATH)]
    assert figures.pretrain_curves(steps).startswith("data:")
    img = np.ones((2, 5, 5))
    portrait = DataPortrait(10, {1: img, 0: img / 2}, {}, {}, {}, [])
    assert figures.mean_images(portrait, ["$x^2$", BROKEN_MATH]).startswith("data:")
    curves, images = drawn
    assert {FOLDER, BROKEN_MATH} <= set(labels(curves)) and FOLDER in svg_text(curves)
    assert {"$x^2$", BROKEN_MATH} <= set(labels(images)) and "$x^2$" in svg_text(images)


def test_a_label_too_long_is_cut_and_a_grid_too_big_is_named_not_drawn(drawn):
    results = [result("finetune", s, 0.8, "m" * 5000) for s in (0, 1)] + [result("scratch", 0, 0.7)]
    figures.fraction_curves(aggregate(results))
    assert max(len(s) for s in labels(drawn[0])) <= figures.LABEL_CHARS
    many = [fake_result("cls", "scratch", f, 0, 0.7) for f in np.linspace(0.01, 1, figures.MAX_COLS + 1)]
    out = figures.roc_panels(many)
    assert out.reason.startswith(f"1 x {figures.MAX_COLS + 1} panels, more than")


def test_a_report_whose_names_hold_dollars_draws_every_figure(tmp_path):
    run = tmp_path / "run"
    write_results(run / "results", [result("finetune", s, 0.8, BROKEN_MATH) for s in (0, 1)]
                  + [result("scratch", s, 0.7) for s in (0, 1)])
    pretraining(run / BROKEN_MATH.replace("\\", "_"), BROKEN_MATH)
    report = build_report(str(run), write=False)
    assert "Figure not drawn" not in report.html
    assert report.html.count("<img ") == 3  # fraction curves, ROC, pretraining curves


# --- malformed training and pretraining records are listed, not fatal ---------------------------------------------

@pytest.mark.parametrize("kind,file,content,problem", [
    ("training", "run.json", {"task": None}, "task is null"),
    ("training", "run.json", {"seed": "abc"}, "seed is str, expected a whole number"),
    ("training", "run.json", {"label_fraction": "0.5"}, "label_fraction is str"),
    ("training", "run.json", {"mode": "../../x"}, "mode is str"),
    ("training", "run.json", {"model": "x"}, "model is str, expected an object"),
    ("training", "run.json", {"provenance": {"packages": [1]}}, "provenance.packages is list"),
    ("training", "metrics.json", {"epochs": [{"train_loss": 1.0}]}, "epochs[0].epoch is null"),
    ("training", "metrics.json", {"epochs": [{"epoch": 0, "val_loss": "high"}]}, "epochs[0].val_loss is str"),
    ("pretraining", "run.json", {"config": [1, 2]}, "config is list, expected an object"),
    ("pretraining", "run.json", {"final": "done"}, "final is str"),
    ("pretraining", "run.json", {"final": {"loss": "low"}}, "final.loss is str"),
    ("pretraining", "run.json", {"encoder": ["x"]}, "encoder is list"),
    ("pretraining", "run.json", {"world_size": "two"}, "world_size is str"),
    ("pretraining", "metrics.json", {"epochs": "all"}, "epochs is str, expected a list"),
    ("pretraining", "metrics.json", {"epochs": [{"epoch": 0, "loss": [1]}]}, "epochs[0].loss is list"),
])
def test_a_malformed_run_record_is_listed_under_what_is_missing(tmp_path, kind, file, content, problem):
    run = tmp_path / "run"
    write_results(run / "results", [result("finetune", s, 0.8) for s in (0, 1)] + [result("scratch", s, 0.7)
                                                                                    for s in (0, 1)])
    step = run / f"{kind}-bad"
    if kind == "pretraining":
        pretraining(step, "simclr")
    else:
        training(step)
    doc = json.loads((step / file).read_text())
    (step / file).write_text(json.dumps({**doc, **content}))
    report = build_report(str(run), write=False)
    lines = [m for m in report.missing if m.startswith("unreadable: ") and f"{kind}-bad/{file}" in m]
    assert len(lines) == 1 and f"{kind} " in lines[0] and f"({problem}" in lines[0], report.missing
    assert report.summary["cls_auc_finetune_f0.1_n"] == 2  # the rest of the run still makes the report
    if file == "metrics.json" and kind == "training":  # the run itself still counts, without its curves
        assert any(m.endswith("(cls scratch at 10%, seed 0) has no model.pt") for m in report.missing)
    elif file == "metrics.json":
        assert "pretrain pretraining-bad" in report.html.split('id="resources"')[1]


def test_a_torn_run_json_is_listed_and_the_report_builds(tmp_path):
    run = tmp_path / "run"
    write_results(run / "results", [result("scratch", s, 0.7) for s in (0, 1)])
    training(run / "torn")
    (run / "torn" / "run.json").write_text('{"format": "jetlib.model/2", "task": "cl')
    report = build_report(str(run), write=False)
    assert any(m.startswith("unreadable: ") and m.endswith("torn/run.json: not a JSON object") for m in report.missing)


# --- hostile sizes ------------------------------------------------------------------------------------------------

def test_hostile_sizes_keep_the_page_within_2_mb_and_say_so(tmp_path):
    run = tmp_path / "run"
    big = "m" * 1_000_000
    results = [result("finetune", s, 0.8 + 0.01 * s, big) for s in (0, 1)]
    results += [result("scratch", s, 0.7 + 0.01 * s, provenance={"host": "h" * 3_000_000}) for s in (0, 1)]
    results[2]["config"] = {"note": "c" * 3_000_000}
    write_results(run / "results", results)
    for i in range(1_500):  # 1,500 lines under "What is missing", each naming a long file
        (run / "results" / f"{i:04d}-{'x' * 200}.json").write_text('{"torn')
    report = build_report(str(run))
    html = (run / "report" / "report.html").read_bytes()
    assert len(html) <= HTML_LIMIT and len(report.markdown) <= MARKDOWN_LIMIT
    for page in (report.html, report.markdown):
        assert "This page is shortened" in page and "more characters cut" in page
    assert re.search(r"… and [\d,]+ more \(page size limit\)", report.html)  # the missing list, cut
    # every section is still there, and the numbers are whole
    for section in ("headline", "pretraining", "fractions", "provenance", "missing"):
        assert f'<section id="{section}">' in report.html
    assert report.summary[f"cls_auc_finetune_{big}_f0.1_mean"] == pytest.approx(0.805)
    assert report.summary["cls_auc_scratch_f0.1_n"] == 2


def test_fit_keeps_an_ordinary_page_whole_and_cuts_a_huge_one_within_its_limits():
    small = [Section("a", "A", [Para("text"), Table(["h"], [["1"]]), Bullets(["x"]), Pre("{}", "config"),
                                Figure("data:image/png;base64," + "A" * 1000, "fig", "cap")])]
    html, md, cuts = fit("title", "sub", small)
    assert not cuts and html == to_html("title", "sub", small) and md == to_markdown("title", "sub", small)
    huge = [Section("a", "A", [Para("p" * 5_000_000), Table(["h"] * 100, [["c"] * 100] * 50_000),
                               Bullets(["b" * 100] * 50_000), Pre("q" * 5_000_000, "config"),
                               Figure("data:image/png;base64," + "A" * 900_000, "fig one"),
                               Figure("data:image/png;base64," + "A" * 900_000, "fig two"),
                               *[Para("more")] * 5_000])]
    html, md, cuts = fit("title", "s" * 1_000_000, huge)
    assert len(html.encode()) <= HTML_LIMIT and len(md) <= MARKDOWN_LIMIT
    assert cuts.texts and cuts.rows and cuts.columns and cuts.items and cuts.blocks
    assert html.count("<img ") + cuts.figures == 2 and "This page is shortened" in html
    assert "more rows not shown (page size limit)" in html and "more characters cut" in md


# --- the collapse caption states the monitor's rule ---------------------------------------------------------------

def test_the_collapse_caption_states_the_monitors_thresholds(tmp_path):
    run = tmp_path / "run"
    write_results(run / "results", [result("finetune", s, 0.8) for s in (0, 1)])
    pretraining(run / "pretrain-s0", "simclr")
    report = build_report(str(run), write=False)
    rule = f"under {monitor.STD_FRACTION:g}/√D or the effective rank under max({monitor.MIN_RANK:g}, " \
           f"{monitor.RANK_FRACTION:g} D)"
    assert rule == "under 0.01/√D or the effective rank under max(1.5, 0.01 D)"
    assert rule in report.html and rule in report.markdown.replace("\\", "")
    assert "0.1/√D" not in report.html
