"""``plan``, ``plan_pretraining``, ``match_encoders``, ``run_folder`` and ``pretrain_gpus``: the items
of the study's two loops, which encoder each training starts from, where the run writes and what the
pretraining pod asks for, each checked before any simulation or training.

Each loop iterates over one component's single output: kfp.local 2.17 resolves a loop's items
only from a task's ``Output`` (kfp/local/orchestrator/enhanced_dag_orchestrator.py, the
ParallelFor runner, reads ``<task>-Output``), so the two plans are two components, not one with two
named outputs.
"""

from kfp import dsl
from kfp.dsl import Input, Model

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def plan(store: str, run_name: str, job_id: str, label_fractions: list, seeds: list, modes: list, methods: list,
         pretrain_seeds: list, preset: str = "auto", augment: str = "seed", finetune_augment: str = "none",
         encoder: str = "resnet") -> list:
    """Expand label fractions x seeds x modes (x pretraining, for the pretrained modes) into the
    items of the one training loop.

    Args:
        store: the object store.
        run_name: the run folder's name (empty: ``job_id``).
        job_id: the KFP run's id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``), unique per run.
        label_fractions: label fractions in (0, 1], each one of the dataset's subsets.
        seeds: training seeds.
        modes: ``<task>-<mode>`` trainings to run, a non-empty subset of ``jetlib.study.MODES``.
        methods: pretraining methods, names in ``jetlib.methods.METHODS``.
        pretrain_seeds: pretraining seeds.
        preset, augment, finetune_augment, encoder: the run's settings the steps read by name, checked
            here (``jetlib.study.check_settings``) so that a misspelt one stops the run before ingest.

    Returns:
        ``{"fraction", "seed", "problem", "mode", "folder"}`` per training (with ``"method"`` and
        ``"pretrain_seed"`` for a pretrained mode), never empty. ``folder`` is the run folder:
        kfp.local 2.17 replaces any task output passed into a loop by the loop item, so the folder
        travels inside the items.
    """
    from jetlib.steps import step_errors
    from jetlib.study import check_settings, run_dir
    from jetlib.study import plan as expand

    with step_errors():
        check_settings(preset, augment, finetune_augment, encoder)
        folder = run_dir(store, run_name or job_id)
        items = [{**item, "folder": folder} for item in expand(label_fractions, seeds, modes, methods, pretrain_seeds)]
    print(f"{len(items)} trainings into {folder}")
    return items


@dsl.component(**COMPONENT)
def plan_pretraining(store: str, run_name: str, job_id: str, methods: list, pretrain_seeds: list) -> list:
    """Expand methods x pretraining seeds into the items of the pretraining loop.

    Args:
        store: the object store.
        run_name: the run folder's name (empty: ``job_id``).
        job_id: the KFP run's id.
        methods: pretraining methods, names in ``jetlib.methods.METHODS``.
        pretrain_seeds: pretraining seeds.

    Returns:
        ``{"method", "seed", "folder"}`` per pretraining, never empty (``folder``: see ``plan``).
    """
    from jetlib.steps import step_errors
    from jetlib.study import pretrainings, run_dir

    with step_errors():
        folder = run_dir(store, run_name or job_id)
        items = [{**item, "folder": folder} for item in pretrainings(methods, pretrain_seeds)]
    print(f"{len(items)} pretrainings into {folder}")
    return items


@dsl.component(**COMPONENT)
def match_encoders(trainings: list, encoders: Input[list[Model]]) -> list:
    """The training loop's items, each pretrained one with the URI of its encoder (``"encoder"``).

    Args:
        trainings: ``plan``'s trainings.
        encoders: every pretraining's output (the fan-in of the pretraining loop, never empty).

    Returns:
        ``trainings`` in order, each with ``"encoder"``: the folder of the pretraining of its
        method and pretraining seed, ``""`` for scratch and VGG.
    """
    from jetlib.steps import step_errors
    from jetlib.study import match_encoders as match

    with step_errors():
        return match(trainings, [dict(e.metadata) for e in encoders])


@dsl.component(**COMPONENT)
def run_folder(store: str, run_name: str, job_id: str) -> str:
    """``STORE/runs/<run_name>``, or ``STORE/runs/<job_id>`` (the KFP run's id) when ``run_name`` is empty."""
    from jetlib.steps import step_errors
    from jetlib.study import run_dir

    with step_errors():
        return run_dir(store, run_name or job_id)


@dsl.component(**COMPONENT)
def pretrain_gpus(nodes: int, gpus_per_node: int) -> str:
    """The pretraining pod's GPU limit, as the string a KFP 2.17 driver can read: ``gpus_per_node``
    on one node, ``0`` when the pod only waits for a multi-node job."""
    from jetlib.placement import check_counts
    from jetlib.steps import step_errors

    with step_errors():
        check_counts(nodes, gpus_per_node)
    return str(gpus_per_node if nodes == 1 else 0)
