"""The CPU image: metadata, non-root, no credentials inside, and every step run in a container."""

from __future__ import annotations

import json

import pytest

import jetlib
from jetlib.data.store import open_store
from tests.conftest import write_h5
from tests.docker.conftest import CREDS, docker_run, sh

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_image_metadata_user_and_entrypoint(image):
    config = json.loads(sh("docker", "image", "inspect", image).stdout)[0]["Config"]
    labels = config["Labels"]
    assert image.rsplit(":", 1)[1] == jetlib.__version__ != "latest"
    assert labels["org.opencontainers.image.version"] == jetlib.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert config["User"] == "1000:1000" and config["Entrypoint"] == ["jetlib-entrypoint"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["JETLIB_GIT_COMMIT"] == labels["org.opencontainers.image.revision"]
    r = sh("docker", "run", "--rm", "--read-only", image, "--help")
    for step in ("pretrain", "finetune", "evaluate", "ingest", "report"):
        assert step in r.stdout
    # a program as the first argument runs as given (KFP's launcher and kfp.local send `sh -c ...`)
    assert sh("docker", "run", "--rm", image, "sh", "-c", "echo $HOME").stdout.strip() == "/home/jetlib"
    ids = sh("docker", "run", "--rm", "--entrypoint", "id", image).stdout.split()
    assert ids[:2] == ["uid=1000(jetlib)", "gid=1000(jetlib)"]
    # kfp is importable by the image's python3, as KFP's component launcher needs
    r = sh("docker", "run", "--rm", "--entrypoint", "python3", image, "-c",
           "import kfp, jetlib; print(kfp.__version__)")
    assert r.stdout.strip() == "2.17.3"


def test_no_credentials_in_history_or_config(image):
    history = sh("docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    config = sh("docker", "image", "inspect", image).stdout
    text = history + config
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "JETLIB_S3_ENDPOINT"):
        assert name not in text, f"{name} appears in the image's history or config"
    for value in CREDS.values():
        assert value not in text
    assert "PIP_INDEX_URL" not in text and "@" not in "".join(
        line for line in history.splitlines() if "http" in line)  # no user:password@host URL baked in


def _ingest_in_a_container(image: str, net: str, s3: str, tmp_path, n: int) -> str:
    """Ingest ``n`` generated jets with ``docker run`` into ``S3/store``; returns the dataset URI."""
    h5 = tmp_path / "jets.h5"
    write_h5(h5, n=n)
    h5.chmod(0o644)
    r = docker_run(image, net, "ingest", "/data/jets.h5", "--store", f"{s3}/store", "--shard-rows", "16",
                   "--row-group-rows", "8", "--fractions", "0.5,1", mounts=(f"{h5}:/data/jets.h5:ro",))
    assert r.returncode == 0, r.stderr[-3000:]
    data = r.stdout.strip().splitlines()[-1]
    assert data.startswith(f"{s3}/store/")
    return data


def test_steps_chain_in_containers_against_s3(image, network, s3, tmp_path):
    net, _ = network
    data = _ingest_in_a_container(image, net, s3, tmp_path, n=90)
    steps = [
        ("pretrain", "--data", data, "--out", f"{s3}/runs/pre", "--preset", "tiny", "--device", "cpu"),
        ("finetune", "--data", data, "--task", "cls", "--mode", "finetune", "--init", f"{s3}/runs/pre",
         "--label-fraction", "1", "--preset", "tiny", "--device", "cpu", "--out", f"{s3}/runs/cls"),
        ("evaluate", "--data", data, "--model", f"{s3}/runs/cls", "--out", f"{s3}/runs/results", "--device", "cpu"),
    ]
    for args in steps:
        r = docker_run(image, net, *args)
        assert r.returncode == 0, f"{args[0]}: {r.stderr[-3000:]}"
    # read everything back from the store, on the host
    pre = json.loads(open_store(f"{s3}/runs/pre").get_bytes("run.json"))
    cls = json.loads(open_store(f"{s3}/runs/cls").get_bytes("run.json"))
    assert pre["format"] == "jetlib.pretrain/2" and cls["format"] == "jetlib.model/2"
    results = open_store(f"{s3}/runs/results")
    (name,) = [k for k in results.list() if k.endswith(".json")]
    result = json.loads(results.get_bytes(name))
    assert result["format"] == "jetlib.result/2" and result["task"] == "cls" and result["mode"] == "finetune"
    assert result["model"]["sha256"] == cls["model"]["sha256"]
    assert 0.0 <= result["scalars"]["accuracy"] <= 1.0
    assert result["dataset"]["split"] == "test"


def test_bad_store_credentials_exit_3_in_a_container(image, network, s3, monkeypatch):
    net, _ = network
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    r = docker_run(image, net, "inspect", f"{s3}/store/none")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines()[-1].endswith("needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                                      "in the environment")


def test_torch_in_the_image_imports_and_its_build_and_size_are_reported(image):
    """The torch the image carries imports and computes on the CPU as the non-root user. Which build it
    is (PyPI's x86_64 wheel is a CUDA build: its libraries list libcudart as DT_NEEDED) and the image's
    size are printed as a JSON line, not judged: they depend on TORCH_INDEX_URL (images/Dockerfile)."""
    r = sh("docker", "run", "--rm", "--read-only", "--entrypoint", "python3", image, "-c",
           "import json, torch; x = torch.arange(6.0).reshape(2, 3); "
           "print(json.dumps({'torch': torch.__version__, 'cuda_build': torch.version.cuda, "
           "'sum': float((x @ x.T).sum())}))")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["sum"] == 5.0 + 14.0 + 14.0 + 50.0  # [[0,1,2],[3,4,5]] @ its transpose, summed
    size = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", image).stdout)
    print(json.dumps({"image": image, "bytes": size, "torch": got["torch"], "cuda_build": got["cuda_build"]}))


def test_compile_works_in_a_read_only_container(image, network, s3, tmp_path):
    """``pretrain --compile`` in the image as the pods run it: non-root, read-only root filesystem, HOME
    unwritable, /tmp an emptyDir. Inductor on the CPU compiles C++ with g++ against Python.h
    (``torch/_inductor/cpp_builder.py``) and caches under ``TORCHINDUCTOR_CACHE_DIR``, by default under
    ``$TMPDIR`` (``torch/_inductor/runtime/cache_dir_utils.py``, ``default_cache_dir``); jetlib points it
    at ``$JETLIB_CACHE`` (``jetlib.device.prepare_compile``). Triton on CUDA needs the same gcc and
    headers (``triton/runtime/build.py``, ``_build``), which this image layer installs for both flavours.
    The run must finish, record ``compile``, and leave compiled kernels in ``$JETLIB_CACHE/inductor``."""
    net, _ = network
    data = _ingest_in_a_container(image, net, s3, tmp_path, n=60)
    script = (f"jetlib pretrain --data {data} --out {s3}/runs/compiled --preset tiny --device cpu --compile "
              "--set epochs=1 && test ! -w \"$HOME\" && ls \"$JETLIB_CACHE/inductor\" | grep -q .")
    r = docker_run(image, net, "-c", script, entrypoint="sh", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads(open_store(f"{s3}/runs/compiled").get_bytes("run.json"))
    assert record["config"]["compile"] is True and record["encoder"]["sha256"]
