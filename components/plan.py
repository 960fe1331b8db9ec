"""``plan`` and ``run_folder``: the study grid and where the run writes, checked before any training."""

from kfp import dsl

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def plan(store: str, run_name: str, job_name: str, label_fractions: list, seeds: list, modes: list,
         kind: str) -> list:
    """Expand label fractions x seeds x modes into loop items.

    Args:
        store: the object store.
        run_name: the run folder's name (empty: ``job_name``).
        job_name: the KFP run's name.
        label_fractions: label fractions in (0, 1], each one of the dataset's subsets.
        seeds: training seeds.
        modes: ``<task>-<mode>`` trainings to run, a subset of ``jetlib.workflow.MODES``.
        kind: ``resnet`` (fine-tune, linear, scratch) or ``vgg`` (the baseline).

    Returns:
        ``resnet``: ``{"fraction", "seed", "problem", "mode", "folder"}`` per training; ``vgg``:
        ``{"fraction", "seed", "folder"}`` per training (empty without ``cls-vgg`` in ``modes``).
        ``folder`` is the run folder: kfp.local 2.17 replaces any task output passed into a loop
        by the loop item, so the folder travels inside the items.
    """
    from jetlib.workflow import plan as expand
    from jetlib.workflow import run_dir

    runs, baselines = expand(label_fractions, seeds, modes)
    folder = run_dir(store, run_name or job_name)
    items = [{**item, "folder": folder} for item in {"resnet": runs, "vgg": baselines}[kind]]
    print(f"{len(items)} {kind} trainings")
    return items


@dsl.component(**COMPONENT)
def run_folder(store: str, run_name: str, job_name: str) -> str:
    """``STORE/runs/<run_name>``, or ``STORE/runs/<job_name>`` (the KFP run's name) when ``run_name`` is empty."""
    from jetlib.workflow import run_dir

    return run_dir(store, run_name or job_name)
