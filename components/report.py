"""``report``: the study's HTML and Markdown report and its summary metrics."""

from kfp import dsl
from kfp.dsl import HTML, Input, Markdown, Metrics, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def report(run: str, results: Input[list[Metrics]], baseline_results: Input[list[Metrics]], html: Output[HTML],
           markdown: Output[Markdown], summary: Output[Metrics]):
    """Build the report from everything in the run folder into ``RUN/report/``.

    Args:
        run: the run folder (the report reads result files by content, whatever their names).
        results: the ResNet evaluations (the fan-in: the report runs once all have finished).
        baseline_results: the VGG evaluations (empty, or None under kfp.local, without cls-vgg).
        html: the self-contained report page.
        markdown: the same report as Markdown.
        summary: flat, stable keys such as ``cls_auc_finetune_f0.1_mean`` (finite values only).
    """
    from jetlib.report import build_report

    rep = build_report(run)
    with open(html.path, "w") as f:
        f.write(rep.html)
    with open(markdown.path, "w") as f:
        f.write(rep.markdown)
    for key, value in sorted(rep.summary.items()):
        summary.log_metric(key, value)
    # Not in summary: a Metrics artifact's metadata is all numbers the UI compares across runs.
    evaluations = len(results or []) + len(baseline_results or [])
    html.metadata.update(uri=rep.out_uri, evaluations=evaluations, missing=rep.missing)
    print(f"report: {rep.out_uri}")
