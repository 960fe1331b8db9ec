"""Where a record came from: code version, packages, host and device.

Every ``run.json`` and result file carries :func:`provenance` so that a number in a
report can be traced back to the exact code and environment that produced it
(as DINO records the git commit in every run).
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

from jetlib import __version__

# The packages whose versions change numbers: the numerical stack, the store and the pipeline.
PACKAGES = ("torch", "torchvision", "numpy", "pyarrow", "scikit-learn", "h5py", "minio", "kfp",
            "kfp-kubernetes", "kubeflow")


def package_versions(names=PACKAGES) -> dict[str, str]:
    """``{name: version}`` for each installed package in ``names`` (missing ones are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@functools.cache
def git_commit() -> str | None:
    """The commit of the code that runs: ``JETLIB_GIT_COMMIT`` (set in images), else ``git rev-parse HEAD``.

    Reads the checkout the package sits in (an editable install); an installed wheel, a
    missing ``git`` or anything else that goes wrong gives ``None``, never an error.
    """
    env = os.environ.get("JETLIB_GIT_COMMIT", "").strip()
    if env:
        return env
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def provenance(device=None) -> dict:
    """The provenance block of a run record.

    Args:
        device: the device the step ran on (``torch.device`` or str), or ``None`` when not known.

    Returns:
        ``{"created": UTC ISO-8601, "jetlib": version, "git_commit": str | None,
        "packages": {name: version}, "python": version, "host": hostname, "device": str | None}``.
    """
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "jetlib": __version__,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "device": None if device is None else str(device),
    }
