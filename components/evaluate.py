"""``evaluate``: score a trained model on the test split; log its metrics for the Kubeflow UI."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def evaluate(dataset: Input[Dataset], model: Input[Model], run: str, metrics: Output[Metrics],
             confusion: Output[ClassificationMetrics]):
    """Write the result file into ``RUN/results/`` and log its numbers.

    Args:
        dataset: the ingested dataset the model was trained on.
        model: a ``train`` output.
        run: the run folder.
        metrics: the task's five scores (classification: accuracy, f1, roc_auc,
            rejection_at_eps_s_0.5, rejection_at_eps_s_0.3; regression: mse, rmse, mae, r2,
            relative_resolution) plus label_fraction, seed, test_jets, trainable_parameters,
            train_seconds. A score undefined on the test split is left out, never faked.
            ``display_name`` (e.g. ``cls-finetune f0.1 s2``, with ``(pretrain-vicreg-s0)`` for a
            model started from that pretraining) names the training in the UI, and so does the
            string ``training``: the Compare page shows no display_name, only rows of properties.
        confusion: classification only: the confusion matrix (rows: true gluon, quark), named
            like ``metrics``. The ROC curves are the report's (one per mode and fraction).
    """
    import posixpath

    from jetlib.evaluate import evaluate as score
    from jetlib.kfp_outputs import TRAINING_KEY, flat_metadata, result_metrics, training_name
    from jetlib.steps import step_errors

    with step_errors():
        result = score(dataset.metadata["uri"], model.metadata["uri"], posixpath.join(run, "results"))
    name = training_name(result)  # one per (method, pretraining seed) too: the encoder's folder, as train's
    for key, value in flat_metadata(result_metrics(result)).items():
        metrics.log_metric(key, value)
    # the Compare page skips display_name and labels every column "evaluate > metrics": a row names it
    metrics.metadata.update({"display_name": name, TRAINING_KEY: name})
    if result.get("classification"):
        confusion.log_confusion_matrix(["gluon", "quark"], result["classification"]["confusion_matrix"])
        confusion.metadata["display_name"] = f"{name} confusion"
