"""Docker fixtures: the built CPU image, a private Docker network, and an S3 endpoint it can reach.

The image must already be built (``make images`` or ``.ci/run``); with ``CI=true`` a missing engine or
image fails the tests instead of skipping them. The S3 endpoint is a moto server bound to the
gateway address of a Docker network made for the session: reachable from the containers on that
network and from this host, from nowhere else.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

import jetlib
from tests.conftest import free_port

CREDS = {"AWS_ACCESS_KEY_ID": "moto-docker-key", "AWS_SECRET_ACCESS_KEY": "moto-docker-secret"}


def sh(*args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args[:6])} ... exited {r.returncode}:\n{r.stderr[-4000:]}")
    return r


def _unavailable(why: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI builds it in .ci/run: nothing may be skipped there)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def image() -> str:
    """The CPU image under test: $JETLIB_IMAGE or jetlib:<version>."""
    tag = os.environ.get("JETLIB_IMAGE", f"jetlib:{jetlib.__version__}")
    try:
        sh("docker", "info", timeout=30)
    except (AssertionError, FileNotFoundError, subprocess.TimeoutExpired):
        _unavailable("no Docker engine answers (scripts/dockerd-up.sh starts one)")
    if sh("docker", "image", "inspect", tag, check=False).returncode != 0:
        _unavailable(f"image {tag} is not built (make images)")
    return tag


@pytest.fixture(scope="session")
def network(image):
    """(network name, S3 endpoint URL reachable from it and from the host)."""
    from moto.server import ThreadedMotoServer

    name = f"jetlib-test-{uuid.uuid4().hex[:8]}"
    sh("docker", "network", "create", name)
    try:
        info = json.loads(sh("docker", "network", "inspect", name).stdout)[0]
        gateway = info["IPAM"]["Config"][0]["Gateway"]
        port = free_port()
        server = ThreadedMotoServer(ip_address=gateway, port=port, verbose=False)
        server.start()
        try:
            yield name, f"http://{gateway}:{port}"
        finally:
            server.stop()
    finally:
        sh("docker", "network", "rm", name, check=False)


@pytest.fixture
def s3(network, monkeypatch, tmp_path):
    """Host env pointed at the network's S3 endpoint; returns a fresh s3:// prefix."""
    _, endpoint = network
    monkeypatch.setenv("JETLIB_S3_ENDPOINT", endpoint)
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("JETLIB_CACHE", str(tmp_path / "cache"))
    return f"s3://jetlib-docker-{uuid.uuid4().hex[:10]}"


def docker_run(image: str, network: str, *args: str, name: str | None = None, detach: bool = False,
               entrypoint: str | None = None, mounts: tuple[str, ...] = (), env: dict | None = None,
               timeout: float = 600, aliases: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``docker run`` as a user would: non-root, read-only root, /tmp as tmpfs, credentials by name only.

    /tmp allows executing files, as a Kubernetes emptyDir does: Triton and inductor load the libraries
    they compile from their cache there (Docker's own ``--tmpfs`` default is ``noexec``).

    ``-e NAME`` (no value) copies NAME from this process's environment, so no secret is on a command line.
    """
    cmd = ["docker", "run", "--read-only", "--tmpfs", "/tmp:rw,exec,nosuid,size=1g", "--shm-size", "256m",
           "--network", network, "-e", "JETLIB_S3_ENDPOINT", *[x for k in CREDS for x in ("-e", k)],
           "-e", "JETLIB_PROGRESS=0", "-e", "OMP_NUM_THREADS=1"]
    for k, v in (env or {}).items():
        cmd += ["-e", f"{k}={v}"]
    for m in mounts:
        cmd += ["-v", m]
    if name:
        cmd += ["--name", name, "--hostname", name]
    for alias in aliases:  # more DNS names on the network, e.g. a JobSet pod's <job>-node-0-0.<job>
        cmd += ["--network-alias", alias]
    cmd += ["-d"] if detach else ["--rm"]
    if entrypoint:
        cmd += ["--entrypoint", entrypoint]
    return sh(*cmd, image, *args, check=False, timeout=timeout)
