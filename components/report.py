"""``report``: the study's HTML and Markdown report, its summary metrics and the ROC curves to compare."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Input, Markdown, Metrics, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def report(run: str, results: Input[list[Metrics]], html: Output[HTML], markdown: Output[Markdown],
           summary: Output[Metrics], roc_1: Output[ClassificationMetrics], roc_2: Output[ClassificationMetrics],
           roc_3: Output[ClassificationMetrics], roc_4: Output[ClassificationMetrics],
           roc_5: Output[ClassificationMetrics], roc_6: Output[ClassificationMetrics],
           roc_7: Output[ClassificationMetrics], roc_8: Output[ClassificationMetrics]):
    """Build the report from everything in the run folder into ``RUN/report/``.

    Args:
        run: the run folder (the report reads result files by content, whatever their names).
        results: every evaluation (the fan-in: the report runs once all have finished; never empty).
        html: the self-contained report page (metadata: ``uri``, ``evaluations``, ``gaps``).
        markdown: the same report as Markdown.
        summary: flat, stable keys such as ``cls_auc_finetune_f0.1_mean`` (finite values only).
        roc_1: ... ``roc_8``: the ROC curve of each classification mode at each label fraction,
            averaged over seeds, in slot order (fraction, then mode), named e.g. ``cls-finetune f0.1
            (mean of 3)``; unused slots stay empty. The UI overlays at most 10 curves: these are the
            ones a person compares, instead of one per evaluation.
    """
    from jetlib.kfp_outputs import flat_metadata, report_curves
    from jetlib.report import build_report
    from jetlib.report.collect import collect
    from jetlib.steps import step_errors

    with step_errors():
        rep = build_report(run)
        curves = report_curves(collect(run).results)
    with open(html.path, "w") as f:
        f.write(rep.html)
    with open(markdown.path, "w") as f:
        f.write(rep.markdown)
    for key, value in sorted(flat_metadata(rep.summary).items()):
        summary.log_metric(key, value)
    summary.metadata["display_name"] = "study summary"
    slots = [roc_1, roc_2, roc_3, roc_4, roc_5, roc_6, roc_7, roc_8]
    for slot, (name, fpr, tpr, threshold) in zip(slots, curves, strict=False):  # curves: at most len(slots)
        slot.log_roc_curve(fpr, tpr, threshold)
        slot.metadata["display_name"] = name
    # Not in summary: a Metrics artifact's metadata is all numbers the UI compares across runs.
    html.metadata.update(flat_metadata({"uri": rep.out_uri, "evaluations": len(results), "gaps": len(rep.missing),
                                        "display_name": "report"}))
    markdown.metadata["display_name"] = "report (Markdown)"
    print(f"report: {rep.out_uri}")
