"""Run the compiled pipeline on this machine with ``kfp.local`` (no cluster).

The compiled YAML is loaded as a component and called like a function: ``kfp.local`` then
orchestrates the same DAG a cluster runs (ParallelFor, the Collected fan-in), untouched: no
part of kfp.local is patched, so what runs here is what the compiled YAML says. Each step runs as a
subprocess of this Python (``SubprocessRunner(use_venv=False)``: the project's ``.venv`` is the
image) or, with ``docker=True``, in the project's image (``DockerRunner``). Kubernetes settings
(GPUs, Secret, ``/dev/shm``, node selectors) are cluster-only and ignored here.
"""

import contextlib
import logging
import os
import time
import warnings
from pathlib import Path

from jetlib.errors import TrainingError

HERE = Path(__file__).resolve().parent
CPU_YAML = HERE / "jet_ssl_cpu.yaml"


def run_local(arguments: dict, yaml_path: str | os.PathLike = CPU_YAML, pipeline_root: str | os.PathLike = "kfp-local",
              docker: bool | dict = False) -> float:
    """Run the compiled pipeline at ``yaml_path`` with ``arguments``; returns the wall time in seconds.

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
    with warnings.catch_warnings(), _quiet_kfp_info():
        # The subprocess runner warns for every step that "jetlib:<version>" is not a Python image:
        # here the .venv stands in for the image.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        try:
            pipeline(**arguments)
        except RuntimeError as e:
            raise TrainingError(f"the pipeline failed: {_plain(str(e))}") from None
    return time.perf_counter() - t0


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
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
