"""Run the compiled pipeline on this machine with ``kfp.local`` (no cluster).

The compiled YAML is loaded as a component and called like a function: ``kfp.local`` then
orchestrates the same DAG a cluster runs (ParallelFor, the Collected fan-in), untouched: no
part of kfp.local is patched, so what runs here is what the compiled YAML says. Each step runs as a
subprocess of this Python (``SubprocessRunner(use_venv=False)``: the project's ``.venv`` is the
image) or, with ``docker=True``, in the project's image (``DockerRunner``). Kubernetes settings
(GPUs, Secret, ``/dev/shm``, node selectors) are cluster-only and ignored here.
"""

import builtins
import contextlib
import logging
import os
import re
import time
import warnings
from pathlib import Path

from jetlib.errors import TrainingError

HERE = Path(__file__).resolve().parent
CPU_YAML = HERE / "jet_ssl_cpu.yaml"


def run_local(arguments: dict, yaml_path: str | os.PathLike = CPU_YAML, pipeline_root: str | os.PathLike = "kfp-local",
              docker: bool | dict = False, steps: list | None = None) -> float:
    """Run the compiled pipeline at ``yaml_path`` with ``arguments``; returns the wall time in seconds.

    ``steps``: a list that receives ``(task, start, end)`` (epoch seconds) of each task as it finishes
    (:class:`StepTimes`).

    ``docker``: run each step in its image with ``kfp.local.DockerRunner``; a dict is passed on as
    ``docker run`` options (e.g. ``{"environment": {...}, "network_mode": "host"}`` to reach an S3
    store: a container sees neither this machine's local store folder nor its environment).

    Raises:
        TrainingError: a step failed (its own error is in the streamed log above, and the message
            names the step).
    """
    from kfp import components, local

    if docker:
        runner = local.DockerRunner(**(docker if isinstance(docker, dict) else {}))
    else:
        runner = local.SubprocessRunner(use_venv=False)
    local.init(runner=runner, pipeline_root=str(Path(pipeline_root).resolve()), raise_on_error=True)
    pipeline = components.load_component_from_file(str(yaml_path))
    t0 = time.perf_counter()
    timer = StepTimes(steps if steps is not None else [])
    with warnings.catch_warnings(), _quiet_kfp_info(), _listening(timer), one_thread_per_step(), \
            _tune_here(), _print_kept():
        # The subprocess runner warns for every step that "jetlib:<version>" is not a Python image:
        # here the .venv stands in for the image.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        try:
            pipeline(**arguments)
        except RuntimeError as e:
            raise TrainingError(f"the pipeline failed: {_plain(str(e))}") from None
    return time.perf_counter() - t0


class StepTimes(logging.Filter):
    """Each task's start and end, read from kfp.local's own log records: ``Executing task 'X'`` and
    ``Task 'X' finished with status ...`` (kfp 2.17.3, ``kfp/local/task_dispatcher.py``,
    ``run_single_task_implementation``; only single tasks log them, never a loop or sub-DAG). Only
    listened to: nothing of kfp.local is changed. A ParallelFor's iterations run in threads
    (``kfp/local/orchestrator/enhanced_dag_orchestrator.py``, ``ParallelExecutor``: the loop's
    ``parallelism``, at most 2), so tasks of one name may overlap; a finish is paired with the
    earliest open start of its name. It is a filter on the root logger, not a handler: kfp.local
    swaps the root logger's handlers around every task (``kfp/local/logging_utils.py``,
    ``local_logger_context``) but leaves its filters."""

    _EVENT = re.compile(r"^(?:Executing task '([^']+)'|Task '([^']+)' finished with status)")

    def __init__(self, steps: list):
        super().__init__()
        self.steps, self._open = steps, {}

    def filter(self, record: logging.LogRecord) -> bool:
        m = self._EVENT.match(_plain(record.getMessage()))
        if m is not None:
            started, finished = m.groups()
            if started:
                self._open.setdefault(started, []).append(record.created)
            elif self._open.get(finished):
                self.steps.append((finished, self._open[finished].pop(0), record.created))
        return True  # only listening: every record goes on


@contextlib.contextmanager
def _listening(timer: logging.Filter):
    root = logging.getLogger()
    root.addFilter(timer)
    try:
        yield
    finally:
        root.removeFilter(timer)


@contextlib.contextmanager
def _step_defaults(**values: str):
    """Set each variable the user has not set for the steps (subprocesses inherit this environment), and
    remove them again afterwards; a value the user set is kept."""
    added = [name for name in values if name not in os.environ]
    os.environ.update({name: values[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def one_thread_per_step():
    """``OMP_NUM_THREADS=1`` for the steps unless it is set.

    The CPU pipeline's training loop runs two iterations at once, and torch's default of one
    OpenMP thread per core puts twice as many spin-waiting threads as cores on the machine: two
    concurrent cpu-preset trainings on 2 cores measured 222 CPU s and 211 s wall with two threads
    each against 37 CPU s and 28 s with one (docs/speed.md). A step running alone (pretraining)
    loses about 10% of wall time with one thread."""
    return _step_defaults(OMP_NUM_THREADS="1")


def _tune_here():
    """``JETLIB_TUNE_BACKEND=optuna`` for the steps unless it is set: a local run's tune step searches in the
    step even where this process runs in a pod (a notebook server), rather than submitting Katib Experiments."""
    return _step_defaults(JETLIB_TUNE_BACKEND="optuna")


@contextlib.contextmanager
def _print_kept():
    """``builtins.print`` as it was before the run. kfp.local indents each task's output by swapping
    ``builtins.print`` for the task (kfp/local/logging_utils.py, ``indented_print``: it saves the current
    one and puts it back after); the iterations of a loop, run side by side on a ThreadPoolExecutor
    (kfp/local/orchestrator/enhanced_dag_orchestrator.py), save each other's indented
    version, and the last to finish can leave one in place, so that every later ``print`` in this
    process writes spaces to stdout first (measured: 12, three levels)."""
    kept = builtins.print
    try:
        yield
    finally:
        builtins.print = kept


@contextlib.contextmanager
def _quiet_kfp_info():
    """Keep kfp.local's own INFO lines (task started/finished, streamed logs) but not root-logger noise."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.setLevel(level)


def _plain(text: str) -> str:
    """kfp.local colours task names with ANSI codes; a one-line error should not carry them."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
