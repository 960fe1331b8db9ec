"""``tune``: search one pretraining method's recipe before its pretrainings (Katib on a cluster, Optuna here)."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def tune(dataset: Input[Dataset], store: str, run_name: str, job_id: str, method: str, trials: int,
         preset: str = "auto", epochs: int = 0, seed: int = 0, gpus_per_node: int = 0,
         image: str = "", parallel: int = 1):
    """Run ``trials`` trials of ``method`` and leave its recipe in ``RUN/tune/<method>/recipe.json`` (with
    ``trials.json``), which the method's pretrainings run (``jetlib.tune.step.tune_step``).

    Args:
        dataset: the ingested dataset (labelled: the objective is the k-NN accuracy on its validation split).
        store, run_name, job_id: the run folder, as ``plan`` names it (a loop over the ``methods`` parameter
            carries no task output in: kfp.local 2.17 replaces one by the loop item).
        method: a name in ``jetlib.methods.METHODS``.
        trials: trials to finish (at least 1); a re-run continues the search the run folder holds.
        preset: tiny, cpu, gpu, or auto (as the pretrainings: gpu when GPUs were asked for, else cpu).
        epochs: epochs of each trial; 0: the preset's, the schedule the pretrainings then run.
        seed: the search's seed.
        gpus_per_node: the run's GPUs per node (0: the trials run on the CPU).
        image: the image of the trials on a cluster (Katib's TrainJobs).
        parallel: trials at once on a cluster.
    """
    from jetlib.steps import step_errors
    from jetlib.study import run_dir
    from jetlib.tune.step import tune_step

    with step_errors():
        tune_step(dataset.metadata["uri"], run_dir(store, run_name or job_id), method, trials,
                  preset=preset, epochs=epochs, seed=seed, gpus_per_node=gpus_per_node, image=image,
                  parallel=parallel)
