"""``jetlib report``: a study run folder becomes one page a physicist reads, its Markdown twin and summary metrics.

    report = build_report("s3://jets/study/runs/exp1")     # or a local folder
    report.summary["cls_auc_finetune_f0.1_mean"]

Walks the run folder by file content (:mod:`~jetlib.report.collect`), pools seeds
(:mod:`~jetlib.report.stats`), states each pretraining's recipe and each method's search
(:mod:`~jetlib.report.tuning`), draws figures (:mod:`~jetlib.report.figures`, test-split
numbers from :mod:`~jetlib.report.inference`) and writes into ``out`` (default ``RUN/report/``):

``report.html``   self-contained (inline CSS, ``data:`` images, no script, nothing fetched), ≤ 2 MB
``report.md``     the same text and tables, no images, links or raw HTML (Kubeflow's Markdown viewer)
``summary.json``  flat ``{key: float}`` with stable keys, for Kubeflow's Metrics and Compare Runs

Every string on the page comes from records in a shared bucket, so it is treated as text
everywhere: escaped for HTML and for Markdown (:mod:`~jetlib.report.render`), plain text in
figure labels (:mod:`~jetlib.report.figures`), and cut to keep both files within their
limits (:mod:`~jetlib.report.budget`). A record the report cannot read is listed under
"What is missing" (:mod:`~jetlib.report.check`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from jetlib import __version__
from jetlib.data.manifest import open_dataset
from jetlib.data.store import open_store
from jetlib.errors import JetlibError
from jetlib.report import inference, pretraining, sections, tuning, views
from jetlib.report.budget import HTML_LIMIT, MARKDOWN_LIMIT, fit
from jetlib.report.collect import collect, dataset_uris
from jetlib.report.missing import missing
from jetlib.report.stats import aggregate, comparisons, headline, spread_source, summary

log = logging.getLogger(__name__)


@dataclass
class Report:
    html: str  # the whole self-contained page
    markdown: str  # tables and text only
    summary: dict[str, float]  # flat stable keys, finite floats only
    out_uri: str  # where report.html, report.md, summary.json were written ("" when not written)
    missing: list[str] = field(default_factory=list)  # one line per gap in the run
    headline: list[str] = field(default_factory=list)  # the headline sentences


def build_report(run: str, out: str | None = None, *, write: bool = True, max_jets: int = inference.MAX_JETS) -> Report:
    """Build the report of the run folder ``run``; write it into ``out`` (default ``run/report``).

    Raises:
        ConfigError: ``run`` holds no study outputs (exit 2).
        StoreError: the store cannot be reached (exit 3).
    """
    study = collect(run)
    cells = aggregate(study.results)
    notes: list[str] = []
    ds = manifest = portrait = None
    uris = dataset_uris(study)
    if uris:
        try:
            ds = open_dataset(uris[0])
            manifest = ds.manifest
            portrait = inference.portrait(ds, max_jets)
        except JetlibError as e:
            notes.append(f"dataset {uris[0]}: {e} (data, encoder and regression figures are not shown)")
            ds = None
    if len(uris) > 1:
        notes.append(f"results come from {len(uris)} datasets ({', '.join(uris)}): the data section shows "
                     f"the first; scores on different test splits do not compare")
    spread = spread_source(study.results)
    searches = tuning.searches(study)  # tune/<method>/: each method's search, when the run tuned first
    notes += tuning.problems(searches)
    parts = [
        sections.headline_section(cells, spread),
        pretraining.pretraining_section(study, cells, spread),  # None without pretrained results or runs
        tuning.recipe_section(study, searches, notes),  # None without pretraining runs
        tuning.tuning_section(searches),  # None without tune/
        sections.metrics_section(cells, study.results),
        sections.classification_section(study.results),
        views.regression_section(study, ds, notes),
        views.learning_section(study),
        views.data_section(ds, portrait, notes),
        views.encoder_section(study, ds, portrait, notes),
        sections.resources_section(study, cells),
    ]
    gaps = missing(study) + notes
    parts += [sections.provenance_section(study, manifest, uris[0] if uris else None), sections.missing_section(gaps)]
    parts = [p for p in parts if p is not None]
    title = "jetlib study report: does self-supervised pretraining help?"
    n_cmp = len(comparisons(cells))
    subtitle = (f"run {study.uri} · {len(study.results)} results, {len(study.pretrains)} pretraining and "
                f"{len(study.trainings)} training runs, {n_cmp} comparisons · error bars over {spread} · "
                f"built {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by jetlib {__version__}")
    html, markdown, cuts = fit(title, subtitle, parts)
    if cuts:
        log.warning("report: shortened to keep report.html under %.0f MB and report.md under %d characters (%s)",
                    HTML_LIMIT / 1e6, MARKDOWN_LIMIT, cuts.sentence())
    flat = summary(cells) | tuning.summary(searches)
    out_uri = ""
    if write:
        target = open_store(out) if out else open_store(run).child("report")
        # summary and Markdown first, the page last: a report.html means the report is whole
        target.put_bytes("summary.json", json.dumps(flat, indent=1, sort_keys=True, allow_nan=False).encode())
        target.put_bytes("report.md", markdown.encode())
        target.put_bytes("report.html", html.encode())
        out_uri = target.uri
    return Report(html, markdown, flat, out_uri, gaps, headline(cells))
