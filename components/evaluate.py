"""``evaluate``: score a trained model on the test split; log its metrics for the Kubeflow UI."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def evaluate(dataset: Input[Dataset], model: Input[Model], run: str, metrics: Output[Metrics],
             curves: Output[ClassificationMetrics]):
    """Write the result file into ``RUN/results/`` and log its numbers.

    Args:
        dataset: the ingested dataset the model was trained on.
        model: a ``finetune`` or ``baseline`` output.
        run: the run folder.
        metrics: the task's five scores (classification: accuracy, f1, roc_auc,
            rejection_at_eps_s_0.5, rejection_at_eps_s_0.3; regression: mse, rmse, mae, r2,
            relative_resolution) plus label_fraction, seed, test_jets, trainable_parameters,
            train_seconds. A score undefined on the test split is left out, never faked.
        curves: classification only: the ROC curve (at most 200 points; the threshold column is
            the signal efficiency) and the confusion matrix (rows: true gluon, quark).
    """
    import posixpath

    from jetlib.evaluate import evaluate as score
    from jetlib.workflow import result_metrics, roc_points

    result = score(dataset.metadata["uri"], model.metadata["uri"], posixpath.join(run, "results"))
    for key, value in result_metrics(result).items():
        metrics.log_metric(key, value)
    roc = roc_points(result)
    if roc is not None:
        curves.log_roc_curve(*roc)
        curves.log_confusion_matrix(["gluon", "quark"], result["classification"]["confusion_matrix"])
