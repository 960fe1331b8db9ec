"""The compiled CPU pipeline under ``kfp.local.DockerRunner``: every step in the jetlib image.

The store is a folder inside the pipeline root, which kfp.local mounts into every container at the
same path, so the steps share it as they share S3 in a cluster. The containers run as the image's
non-root user, so the pipeline root is made writable for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jetlib.study import pretrain_dir
from pipelines.local import CPU_YAML, run_local
from tests.conftest import write_h5

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.mark.filterwarnings("ignore:Task .* have no effect in the current local runner")  # cluster-only settings
def test_compiled_cpu_pipeline_runs_in_docker(image, tmp_path):
    assert f"image: {image}" in CPU_YAML.read_text()  # the compiled YAML names the image under test
    root = tmp_path / "kfp"
    root.mkdir()
    root.chmod(0o777)  # containers write as uid 1000
    write_h5(root / "jets.h5", n=120)
    (root / "jets.h5").chmod(0o644)
    store = root / "store"
    arguments = {"store": str(store), "source": str(root / "jets.h5"), "run_name": "docker", "preset": "tiny",
                 "seeds": [0], "label_fractions": [0.5], "modes": ["cls-finetune", "cls-vgg"]}
    run_local(arguments, pipeline_root=root, docker=True)

    runs = store / "runs" / "docker"
    results = [json.loads(p.read_text()) for p in (runs / "results").glob("*.json")]
    assert sorted(r["mode"] for r in results) == ["finetune", "vgg"]
    assert all(r["format"] == "jetlib.result/2" and r["label_fraction"] == 0.5 for r in results)
    pre = json.loads((Path(pretrain_dir(str(runs), 0)) / "run.json").read_text())  # the default method and seed
    finetuned = next(r for r in results if r["mode"] == "finetune")
    assert {r["mode"]: r["model"]["arch"] for r in results} == {"finetune": "resnet", "vgg": "vgg"}
    assert pre["format"] == "jetlib.pretrain/2"
    if "origin" in finetuned:  # optional in the result contract (absent in older files)
        assert finetuned["origin"]["encoder_sha256"] == pre["encoder"]["sha256"]
    summary = json.loads((runs / "report" / "summary.json").read_text())
    assert summary and all(isinstance(v, float) for v in summary.values())
