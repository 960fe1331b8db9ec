"""The ONE place the components' container images come from.

Read at import (that is, compile) time: ``JETLIB_IMAGE`` (default ``jetlib:<version>``, the CPU
image) and ``JETLIB_CUDA_IMAGE`` (default ``jetlib-cuda:<version>``). They are fixed in the compiled
YAML, not run parameters: ``kfp.local``'s DockerRunner cannot resolve an image given as one, and a
backend's cache key covers the image string (``pipelines/jet_ssl.py`` says more). The pipeline's
``image`` run parameter is only what a multi-node pretraining's workers run.
"""

import os
from importlib.metadata import version

# The installed jetlib's version (the same as jetlib.__version__), read without importing jetlib: a
# component module imports nothing heavy at module level.
__version__ = version("jetlib")

IMAGE = os.environ.get("JETLIB_IMAGE") or f"jetlib:{__version__}"
CUDA_IMAGE = os.environ.get("JETLIB_CUDA_IMAGE") or f"jetlib-cuda:{__version__}"

# Every component: the project's image already holds jetlib and kfp, so nothing is pip-installed at run time.
COMPONENT = {"base_image": IMAGE, "install_kfp_package": False}
