"""The pipeline's export step: the best model of each task by its validation metric (the test split never
read to choose), exported with its card into the run folder and handed to KFP as a ``Model`` artifact.
The component is tested as a function (``component.python_func``), as the other components are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kfp import dsl

from components.export import export as export_step
from jetlib import baseline as bl
from jetlib import finetune as ft
from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.splits import SplitConfig
from jetlib.evaluate import evaluate
from jetlib.study import training_dir
from jetlib.tagger import select
from tests.conftest import write_toy_h5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with three classifiers (two scratch seeds, VGG) and a mass regressor, each evaluated."""
    root = tmp_path_factory.mktemp("export")
    write_toy_h5(root / "toy.h5", n=160, size=125)
    cfg = IngestConfig(split=SplitConfig(label_fractions=(0.5, 1.0)), shard_rows=64, row_group_rows=16)
    data = ingest(root / "toy.h5", str(root / "store"), cfg=cfg)
    folder = str(root / "run")
    for task, mode, fraction, seed in (("cls", "scratch", 1.0, 0), ("cls", "scratch", 0.5, 1), ("cls", "vgg", 1.0, 0),
                                       ("reg", "scratch", 1.0, 0)):
        out = training_dir(folder, task, mode, fraction, seed, None)
        if mode == "vgg":
            bl.baseline(data, out, bl.make_config("tiny", epochs=1, label_fraction=fraction, seed=seed), device="cpu")
        else:
            ft.finetune(data, out, ft.make_config("tiny", task=task, mode=mode, epochs=1, label_fraction=fraction,
                                                  seed=seed, lr=3e-3), device="cpu")
        evaluate(data, out, f"{folder}/results", device="cpu")
    return folder


def test_the_choice_is_the_best_validation_score_and_the_test_split_is_never_read(run, monkeypatch):
    splits = []
    real = select.JetLoader

    def recording(ds, split, **kw):
        splits.append(split)
        return real(ds, split, **kw)

    monkeypatch.setattr(select, "JetLoader", recording)
    chosen = select.best_models(run)
    assert set(splits) == {"val"} and len(splits) == 4  # every training scored once, on the val split only
    monkeypatch.setattr(select, "JetLoader", real)
    assert set(chosen) == {"cls", "reg"}
    assert chosen["cls"].candidates == 3 and chosen["reg"].candidates == 1
    # the chosen classifier has the highest validation accuracy of the three (ties: the smaller label fraction)
    cls_folders = [p for p in Path(run).iterdir() if p.name.startswith("cls-")]
    scores = {str(p): select.val_score(str(p))[1] for p in cls_folders}
    best = max(scores.values())
    assert chosen["cls"].value == best and scores[chosen["cls"].uri] == best
    assert chosen["cls"].monitor == "val_accuracy" and chosen["reg"].monitor == "val_mae"
    # the card's test metrics are the run's own result file, not a new scoring
    assert chosen["cls"].result["model"]["uri"] == chosen["cls"].uri


def test_the_component_exports_into_the_run_folder_and_describes_the_model_artifact(run, tmp_path, capsys):
    model = dsl.Model(name="model", uri=str(tmp_path / "model"))
    model.path  # noqa: B018 - kfp.local makes the artifact's folder; as a function, touching path names it
    export_step.python_func(run=run, model=model)
    out = f"{run}/export"
    assert capsys.readouterr().out.strip().endswith(f"export: {out}")
    meta = model.metadata
    assert meta["framework"] == "onnx" and meta["uri"] == out and meta["opset"] == 18
    chosen = select.best_models(run)
    for task in ("cls", "reg"):
        card = json.loads((Path(out) / task / "model_card.json").read_text())
        assert meta[f"{task}_training"] == chosen[task].uri == card["model"]["training_run"]
        assert meta[f"{task}_onnx_sha256"] == card["onnx"]["sha256"]
        assert meta[f"{task}_{chosen[task].monitor}"] == pytest.approx(chosen[task].value)
        # the artifact holds the same files as the run folder
        for name in ("model.onnx", "model_card.md", "model_card.json"):
            assert (Path(model.path) / task / name).read_bytes() == (Path(out) / task / name).read_bytes()
        result = chosen[task].result
        assert {k: card["test_metrics"][k] for k in result["scalars"] if k in card["test_metrics"]} == \
            {k: v for k, v in result["scalars"].items() if k in card["test_metrics"]}
    assert all(isinstance(v, str | int | float | bool) and not (isinstance(v, float) and np.isnan(v))
               for v in meta.values())  # flat, as the UI shows it


def test_the_compiled_pipeline_exports_after_the_report_under_kfp_local(tmp_path):
    """The committed CPU pipeline under kfp.local (pipelines/local.py, no patch of kfp.local): its last
    step writes RUN/export/cls and hands over a Model artifact whose metadata says onnx."""
    from pipelines.local import CPU_YAML, run_local

    write_toy_h5(tmp_path / "toy.h5", n=120, size=125)
    kfp_root = tmp_path / "kfp"
    run_local({"store": str(tmp_path / "store"), "source": str(tmp_path / "toy.h5"), "run_name": "r",
               "preset": "tiny", "label_fractions": [0.5], "seeds": [0], "modes": ["cls-vgg"]}, CPU_YAML,
              pipeline_root=kfp_root)
    out = tmp_path / "store" / "runs" / "r" / "export" / "cls"
    card = json.loads((out / "model_card.json").read_text())
    assert card["model"]["mode"] == "vgg" and (out / "model.onnx").stat().st_size > 0
    (executor,) = kfp_root.rglob("export/executor_output.json")
    (artifact,) = json.loads(executor.read_text())["artifacts"]["model"]["artifacts"]
    meta = artifact["metadata"]
    assert meta["framework"] == "onnx" and meta["cls_training"] == card["model"]["training_run"]
    assert meta["cls_onnx_sha256"] == card["onnx"]["sha256"]
