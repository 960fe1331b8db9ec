"""Shared fixtures: tiny generated HDF5 files, an S3 endpoint, a CLI runner.

S3 tests run against a SeaweedFS server (the object store KFP deploys) that the tests start on
127.0.0.1 (``tests/s3_server.py``; docs/object-store-testing.md). Set ``JETLIB_TEST_S3_ENDPOINT``
(plus ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``) to run the same tests against another
server, a MinIO or a SeaweedFS of your own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

os.environ.setdefault("JETLIB_PROGRESS", "0")  # keep test logs readable
# One intra-op thread per process (this one, the CLI subprocesses and kfp.local's step processes, which
# inherit the environment; set before anything imports torch). The tests' tensors are tiny, and on a
# shared 2-core machine OpenMP's spinning threads wait on each other: a tiny ResNet step at 24x24 took
# 566 ms with 2 threads and 16 ms with 1 under load 5 (tests/conftest.py history). Export another value
# to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")

KEYS = {"X_jets": ("X_jets", "y", "m0", "pt"), "jet": ("jet", "Y", "m", "pT")}


def jet_images(n: int, channels: int = 3, size: int = 125, seed: int = 0, dtype="float32") -> np.ndarray:
    """(n, C, size, size) sparse, non-negative images: a core of hot pixels around the centre, ~1% filled."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, channels, size, size), dtype=np.float64)
    k = max(1, size * size // 100)
    for c in range(channels):
        i = np.clip(rng.normal(size / 2, size / 10, (n, k)).astype(int), 0, size - 1)
        j = np.clip(rng.normal(size / 2, size / 10, (n, k)).astype(int), 0, size - 1)
        v = rng.exponential(3.0, (n, k))
        for r in range(n):
            x[r, c, i[r], j[r]] = v[r]
    return x.astype(dtype)


def write_h5(path: Path, n: int = 40, layout: str = "X_jets", axis: str = "last", dtype: str = "float32",
             chunks: bool = True, compression: str | None = "gzip", labelled: bool = True, channels: int | None = None,
             size: int = 125, seed: int = 0) -> dict:
    """Write a tiny jet file in one of the public layouts; returns the arrays written (images channel-first)."""
    channels = channels or (3 if layout == "X_jets" else 8)
    rng = np.random.default_rng(seed + 1)
    images = jet_images(n, channels, size, seed, dtype)
    stored = images.transpose(0, 2, 3, 1) if axis == "last" else images
    ik, yk, mk, pk = KEYS[layout]
    data = {"images": images}
    with h5py.File(path, "w") as f:
        kw = {"chunks": (min(8, n),) + stored.shape[1:], "compression": compression} if chunks else {}
        f.create_dataset(ik, data=stored, **kw)
        if labelled:
            data["y"] = (rng.permutation(n) % 2).astype(np.float32)
            data["m0"] = rng.uniform(5, 150, n)
            data["pt"] = rng.uniform(500, 550, n).astype(np.float32)
            f[yk], f[mk], f[pk] = data["y"], data["m0"], data["pt"]
    return data


def write_toy_h5(path: Path, n: int = 200, size: int = 125, seed: int = 0, quarks: float | None = None) -> None:
    """A learnable toy in the quark/gluon layout: quark jets narrow and sparse, gluon jets wide and busy,
    and a "mass" that is the energy-weighted mean distance of the pixels from the axis (x 5 GeV).

    ``quarks``: the fraction of quark jets (label 1), rounded to whole jets; ``None``: alternate
    labels over a permutation (half and half)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(n)
    y = (labels % 2 if quarks is None else labels < round(quarks * n)).astype(np.float32)
    x = np.zeros((n, size, size, 3), np.float32)
    m0 = np.zeros(n)
    centre = size // 2
    for r in range(n):
        width = rng.uniform(2, 5) if y[r] else rng.uniform(6, 12)
        hits = 25 if y[r] else 50
        i = np.clip(rng.normal(centre, width, hits).astype(int), 0, size - 1)
        j = np.clip(rng.normal(centre, width, hits).astype(int), 0, size - 1)
        e = rng.exponential(5.0, hits)
        for c in range(3):
            np.add.at(x[r, :, :, c], (i, j), e * (0.5 + 0.25 * c))
        m0[r] = 5.0 * np.sum(e * np.hypot(i - centre, j - centre)) / e.sum()
    with h5py.File(path, "w") as f:
        f["X_jets"], f["y"], f["m0"], f["pt"] = x, y, m0, np.full(n, 525.0)


@pytest.fixture
def make_h5(tmp_path):
    """make_h5(name, **write_h5 options) -> (path, arrays)."""
    def make(name: str = "jets.h5", **kw):
        path = tmp_path / name
        return path, write_h5(path, **kw)
    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- session fixtures: what many tests share, built once per session ------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """``$JETLIB_CACHE`` (simulated files, S3 shards, compiled kernels) in the session's own folder: the
    tests neither read a user's ``~/.cache/jetlib`` nor leave files in it; subprocesses inherit it."""
    before = os.environ.get("JETLIB_CACHE")
    os.environ["JETLIB_CACHE"] = str(tmp_path_factory.mktemp("jetlib-cache"))
    yield
    if before is None:
        os.environ.pop("JETLIB_CACHE", None)
    else:
        os.environ["JETLIB_CACHE"] = before


@pytest.fixture(scope="session")
def gloo_ranks(tmp_path_factory):
    """Every DDP check's results from one two-process gloo run (``tests/gloo.py``): each rank's
    ``{job: result}``; read a job's with ``tests.gloo.results(gloo_ranks, job)``.

    Under pytest-xdist every worker has its own session fixtures, so the run goes into the folder the
    workers share (the parent of each one's base temporary folder, the session's own): the first worker
    to need it makes it under a file lock, the others wait for that lock and read the same files."""
    from tests import gloo

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return gloo.run(tmp_path_factory.mktemp("gloo"), free_port())
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent / "gloo"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (shared / "done").exists():
            gloo.run(shared, free_port())
            (shared / "done").touch()
    return gloo.load(shared)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """One :func:`ingest_small` dataset (80 labelled 24x24 jets) for the modules that only read it; a test
    that changes a store ingests its own."""
    return ingest_small(tmp_path_factory.mktemp("small-dataset"))


S3_BUCKET = f"jetlib-test-{uuid.uuid4().hex[:12]}"
"""The session's bucket: each test gets its own prefix in it (``s3_env``); one bucket, not one per test, as
a shared bucket is in a cluster (and a bucket is a SeaweedFS collection, with volumes of its own)."""
_SEAWEEDFS = pytest.StashKey()


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (make test: ``--dist loadfile --no-loadscope-reorder``) the workers take whole
    files in this order as they free up: the files with a ``slow`` test (a kfp.local DAG, Docker, torchrun)
    go first and the many short files last, so that no long file starts while the other worker is idle
    at the end, the longest files measured (``LONGEST_FIRST``) before them. Every worker sorts the same
    collection the same way (xdist requires it); a run without xdist keeps pytest's order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    heavy = {item.path for item in items if item.get_closest_marker("slow")}
    root = config.rootpath

    def rank(item):
        name = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        first = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return first, item.path not in heavy

    items.sort(key=rank)  # stable: the collection order within each part


# Files measured at minutes each (kfp.local DAG runs, Docker, torchrun), started before any other so that
# the longest is never the last one running; a name no longer collected is ignored.
LONGEST_FIRST = ("tests/test_pipeline.py", "tests/docker/test_image.py", "tests/test_tagger_pipeline.py",
                 "tests/docker/test_multinode.py", "tests/test_pretrain.py")


def pytest_collection_finish(session):
    """Launch the tests' SeaweedFS as soon as a collected test will need it, without waiting: its few seconds
    of start-up (a master election, mostly idle) overlap the tests that run before the first S3 test."""
    if session.config.option.collectonly:
        return
    wanted = [i for i in session.items if i.get_closest_marker("s3") or "seaweedfs" in getattr(i, "fixturenames", ())]
    if wanted and not os.environ.get("JETLIB_TEST_S3_ENDPOINT"):
        from tests.s3_server import SeaweedFS

        session.config.stash[_SEAWEEDFS] = SeaweedFS().launch()


def pytest_sessionfinish(session):
    """Stop a launched SeaweedFS even when no test came to use it (an interrupted or failed-early run)."""
    server = session.config.stash.get(_SEAWEEDFS, None)
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs(request):
    """The tests' own SeaweedFS S3 server on loopback (``tests/s3_server.py``): random ports and keys, data
    in a temporary folder, one for the whole session; ``.admin`` and ``.reader`` (read and list only)."""
    from tests.s3_server import SeaweedFS

    server = request.config.stash.get(_SEAWEEDFS, None) or SeaweedFS()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(request):
    """(URL, (access key, secret key) or None) of the S3 endpoint: a real one from JETLIB_TEST_S3_ENDPOINT
    (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), else the tests' SeaweedFS."""
    real = os.environ.get("JETLIB_TEST_S3_ENDPOINT")
    if real:
        return real, None
    server = request.getfixturevalue("seaweedfs")
    return server.url, (server.admin.access_key, server.admin.secret_key)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point jetlib at the test endpoint; returns a fresh, not yet written, s3:// URI: a prefix of its own
    in the session's bucket (which may not exist yet: the first write creates it)."""
    url, creds = s3_server
    monkeypatch.setenv("JETLIB_S3_ENDPOINT", url)
    if creds:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds[1])
    monkeypatch.setenv("JETLIB_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"jetlib-cache-{uuid.uuid4().hex}"))
    return f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex[:12]}/run"


@pytest.fixture
def s3_new_bucket(s3_env):
    """Like ``s3_env``, in a bucket of its own that does not exist yet: for what a missing bucket does."""
    return f"s3://jetlib-new-{uuid.uuid4().hex[:12]}/run"


def ingest_small(root: Path, writer=None, n: int = 80, size: int = 24) -> str:
    """A small labelled dataset (``writer``: :func:`write_toy_h5` by default) ingested at its own size, one
    label fraction (1.0): what tests that train a step or two on real shards share."""
    from jetlib.data.ingest import IngestConfig, ingest
    from jetlib.data.splits import SplitConfig

    (writer or write_toy_h5)(root / "jets.h5", n=n, size=size)
    cfg = IngestConfig(split=SplitConfig(label_fractions=(1.0,)), shard_rows=64, row_group_rows=16, image_size=None)
    return ingest(root / "jets.h5", str(root / "store"), cfg=cfg)


def pretrain_straight_and_killed(dataset, tmp_path: Path, cfg, monkeypatch) -> tuple[Path, Path]:
    """Pretrain ``cfg`` straight through into ``straight/``, and into ``resumed/`` killed at the start of
    epoch 2 then re-run (a resume); returns both folders for a bitwise comparison."""
    from jetlib import pretrain as pt

    pt.pretrain(dataset, str(tmp_path / "straight"), cfg, device="cpu")
    real = pt.train_one_epoch

    def killed_in_epoch_2(*args, **kwargs):
        if args[-1] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pt, "train_one_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        pt.pretrain(dataset, str(tmp_path / "resumed"), cfg, device="cpu")
    assert not (tmp_path / "resumed" / "run.json").exists()
    monkeypatch.setattr(pt, "train_one_epoch", real)
    pt.pretrain(dataset, str(tmp_path / "resumed"), cfg, device="cpu")
    return tmp_path / "straight", tmp_path / "resumed"


def run_cli(*args, env: dict | None = None, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """``python -m jetlib ARGS`` in a subprocess, as a user would run it."""
    full_env = {**os.environ, "JETLIB_PROGRESS": "0", **(env or {})}
    cmd = [*(prefix or []), sys.executable, "-m", "jetlib", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture(autouse=True)
def _restore_logging():
    """``cli.main`` run in-process points the root logger at pytest's captured stderr, which is closed
    after the test: remove that handler and restore the level, so later logging does not hit a closed file."""
    import logging

    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in root.handlers[:]:  # only plain stream handlers the test added (pytest manages its own)
        if handler not in before and type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    root.setLevel(level)
