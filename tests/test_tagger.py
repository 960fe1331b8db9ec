"""A trained model as a tagger: ``jetlib predict`` (Parquet scores), ``jetlib export`` (ONNX + model card).

One small study at the public image size (125 x 125, 3 channels): a tiny SimCLR pretraining, a
fine-tuned ResNet-15 classifier and mass regressor, and the VGG baseline, each trained one epoch. The
regressor trains under bf16 autocast, as the cpu preset does where the CPU has native bf16: scoring on
the CPU is float32 all the same, so its torch and ONNX scores agree as closely as a float32 model's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jetlib import baseline as bl
from jetlib import cli
from jetlib import finetune as ft
from jetlib.data import schema
from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.loader import JetLoader
from jetlib.data.splits import SplitConfig
from jetlib.evaluate import evaluate
from jetlib.pretrain import make_config, pretrain
from jetlib.tagger import export as ex
from jetlib.tagger.load import load, model_folder
from jetlib.tagger.predict import predict
from tests.conftest import jet_images, write_h5, write_toy_h5

TRAININGS = {"cls": ("cls", "finetune"), "reg": ("reg", "finetune"), "vgg": ("cls", "vgg")}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """{"root", "data", "h5", "cls", "reg", "vgg"}: training folders of a tiny study at 125 x 125."""
    root = tmp_path_factory.mktemp("tagger")
    write_toy_h5(root / "toy.h5", n=160, size=125)
    cfg = IngestConfig(split=SplitConfig(label_fractions=(1.0,)), shard_rows=64, row_group_rows=16)
    data = ingest(root / "toy.h5", str(root / "store"), cfg=cfg)
    pretrain(data, str(root / "pre"), make_config("tiny", epochs=1), device="cpu")
    out = {"root": root, "data": data, "h5": root / "toy.h5"}
    for name, (task, mode) in TRAININGS.items():
        out[name] = str(root / name)
        if mode == "vgg":
            bl.baseline(data, out[name], bl.make_config("tiny", epochs=1), device="cpu")
        else:
            amp = "bf16" if name == "reg" else "off"
            ft.finetune(data, out[name], ft.make_config("tiny", task=task, mode=mode, epochs=1, lr=3e-3, amp=amp),
                        init=str(root / "pre"), device="cpu")
    return out


def table(path) -> dict:
    t = pq.read_table(path)
    return {"cols": t.to_pydict(), "meta": {k.decode(): v.decode() for k, v in t.schema.metadata.items()}}


# --- predict ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cls", "reg", "vgg"])
def test_predict_on_the_test_split_equals_evaluate(study, name, tmp_path):
    result = evaluate(study["data"], study[name], None, device="cpu")
    summary = predict(study[name], study["data"], str(tmp_path / "s.parquet"), split="test")
    task = result["task"]
    keys = ("roc_auc", "accuracy") if task == "cls" else ("mae", "rmse", "r2")
    assert {k: summary[k] for k in keys} == {k: result["scalars"][k] for k in keys}
    t = table(tmp_path / "s.parquet")
    assert summary["jets"] == result["dataset"]["jets"] == len(t["cols"]["row"])
    # one row per test jet, named by its row in the source file
    test_rows = np.concatenate([b.jet.numpy() for b in JetLoader(study["data"], "test", shuffle=False)])
    assert sorted(t["cols"]["row"]) == sorted(test_rows.tolist())
    assert set(t["cols"]) == {"row", "p_quark" if task == "cls" else "mass_pred_gev", "y", "m0"}


def test_predict_on_the_hdf5_file_gives_every_jet_its_row_labels_and_provenance(study, tmp_path):
    out = tmp_path / "scores.parquet"
    summary = predict(study["cls"], str(study["h5"]), str(out))
    t = table(out)
    with h5py.File(study["h5"]) as f:
        y, m0, pt = f["y"][:], f["m0"][:], f["pt"][:]
    assert t["cols"]["row"] == list(range(160)) and summary["jets"] == 160
    np.testing.assert_array_equal(t["cols"]["y"], y)
    np.testing.assert_array_equal(t["cols"]["m0"], m0)
    np.testing.assert_array_equal(t["cols"]["pt"], pt)
    run = json.loads((Path(study["cls"]) / "run.json").read_text())
    assert t["meta"]["jetlib.model_sha256"] == run["model"]["sha256"]
    assert t["meta"]["jetlib.input_sha256"] == hashlib.sha256(study["h5"].read_bytes()).hexdigest()
    assert t["meta"]["jetlib.version"] == "0.1.0" and t["meta"]["jetlib.runtime"] == "torch"
    # the test split's jets get the same quark probability read from the file as from the dataset
    split = predict(study["cls"], study["data"], str(tmp_path / "test.parquet"), split="test")
    s = table(tmp_path / "test.parquet")["cols"]
    from_file = dict(zip(t["cols"]["row"], t["cols"]["p_quark"], strict=True))
    np.testing.assert_allclose([from_file[r] for r in s["row"]], s["p_quark"], atol=1e-6)
    assert split["roc_auc"] is not None and 0 <= summary["roc_auc"] <= 1


def test_predict_reads_a_file_with_its_own_key_names_as_its_public_twin(study, tmp_path, capsys):
    """``jetlib predict --images-key ...`` as ``jetlib ingest`` takes them: the same rows and scores as the
    public-named file; a named key the file lacks is one line, exit 2, and no Parquet file."""
    import shutil

    renamed = tmp_path / "renamed.h5"
    shutil.copy(study["h5"], renamed)
    with h5py.File(renamed, "a") as f:
        for old, new in {"X_jets": "calo", "y": "is_quark", "m0": "mass", "pt": "jet_pt"}.items():
            f.move(old, new)
    flags = ["--images-key", "calo", "--labels-key", "is_quark", "--mass-key", "mass", "--pt-key", "jet_pt"]
    assert cli.main(["predict", "--model", study["cls"], "--input", str(study["h5"]),
                     "--out", str(tmp_path / "public.parquet")]) == 0
    public = json.loads(capsys.readouterr().out)
    assert cli.main(["predict", "--model", study["cls"], "--input", str(renamed),
                     "--out", str(tmp_path / "renamed.parquet"), *flags]) == 0
    mine = json.loads(capsys.readouterr().out)
    a, b = table(tmp_path / "public.parquet")["cols"], table(tmp_path / "renamed.parquet")["cols"]
    assert a == b and mine["roc_auc"] == public["roc_auc"]
    code = cli.main(["predict", "--model", study["cls"], "--input", str(renamed), "--out",
                     str(tmp_path / "no.parquet"), "--images-key", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and "'nope'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "no.parquet").exists()


def test_predict_streams_the_file_in_blocks_with_the_same_scores(study, tmp_path, monkeypatch):
    whole = predict(study["reg"], str(study["h5"]), str(tmp_path / "whole.parquet"))
    seen = []
    real = schema.iter_blocks

    def small_blocks(f, info, rows):
        for start, block in real(f, info, 16):  # 16 jets at a time instead of ~64 MB
            seen.append(len(block))
            yield start, block

    monkeypatch.setattr(schema, "iter_blocks", small_blocks)
    parts = predict(study["reg"], str(study["h5"]), str(tmp_path / "parts.parquet"), batch_size=5)
    assert seen == [16] * 10
    a, b = table(tmp_path / "whole.parquet")["cols"], table(tmp_path / "parts.parquet")["cols"]
    np.testing.assert_allclose(a["mass_pred_gev"], b["mass_pred_gev"], atol=1e-4)
    assert a["row"] == b["row"] and whole["mae"] == pytest.approx(parts["mae"], abs=1e-4)


def test_predict_scores_an_unlabelled_file_and_refuses_other_channels(study, tmp_path, capsys):
    write_h5(tmp_path / "nolabels.h5", n=12, labelled=False, axis="first")  # channel-first, X_jets, no y/m0/pt
    summary = predict(study["cls"], str(tmp_path / "nolabels.h5"), str(tmp_path / "u.parquet"))
    t = table(tmp_path / "u.parquet")
    assert set(t["cols"]) == {"row", "p_quark"} and summary["jets"] == 12 and "roc_auc" not in summary
    assert all(0 <= p <= 1 for p in t["cols"]["p_quark"])
    write_h5(tmp_path / "eight.h5", n=4, layout="jet")  # 8 channels: not what the model takes
    assert cli.main(["predict", "--model", study["cls"], "--input", str(tmp_path / "eight.h5"),
                     "--out", str(tmp_path / "e.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "8x125x125" in err and "3x125x125" in err


def _nan(path: Path) -> None:
    write_h5(path, n=8)
    with h5py.File(path, "a") as f:
        x = f["X_jets"][:]
        x[5, 60, 61, 1] = np.nan
        f["X_jets"][...] = x


def _external(path: Path) -> None:
    write_h5(path, n=8)
    with h5py.File(path, "a") as f:
        del f["X_jets"]
        f.create_dataset("X_jets", shape=(8, 125, 125, 3), dtype="f4",
                         external=[("/proc/self/environ", 0, h5py.h5f.UNLIMITED)])


def _link(path: Path) -> None:
    write_h5(path.with_name("other.h5"), n=8)
    write_h5(path, n=8)
    with h5py.File(path, "a") as f:
        del f["X_jets"]
        f["X_jets"] = h5py.ExternalLink(str(path.with_name("other.h5")), "X_jets")


def _small(path: Path) -> None:
    write_h5(path, n=8, size=24)


@pytest.mark.parametrize("make, words", [(_nan, "nan at jet 5"), (_external, "external storage"),
                                         (_link, "external link"), (_small, "3x24x24")])
def test_predict_refuses_bad_files_in_one_line_and_writes_nothing(study, tmp_path, capsys, make, words):
    src, out = tmp_path / "bad.h5", tmp_path / "out.parquet"
    make(src)
    assert cli.main(["predict", "--model", study["cls"], "--input", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".scores-*"))


def test_predict_accepts_model_pt_and_refuses_a_dataset_without_split(study, tmp_path, capsys):
    assert model_folder(f"{study['cls']}/model.pt") == study["cls"]
    assert cli.main(["predict", "--model", f"{study['cls']}/model.pt", "--input", study["data"], "--split", "test",
                     "--out", str(tmp_path / "a.parquet")]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["jets"] == 32 and line["column"] == "p_quark"
    assert cli.main(["predict", "--model", study["cls"], "--input", study["data"], "--out", str(tmp_path / "b")]) == 2
    assert "--split" in capsys.readouterr().err


# --- export ----------------------------------------------------------------------------------

class _Exports(dict):
    """name -> (model card, export folder), each training exported on first use only: a test that reads
    one export (the tampered graph, in make test-fast) does not pay for the other two."""

    def __init__(self, study):
        super().__init__()
        self.study = study

    def __missing__(self, name):
        folder = self.study["root"] / f"export-{name}"
        self[name] = (ex.export(self.study[name], str(folder)), folder)
        return self[name]


@pytest.fixture(scope="module")
def exported(study):
    return _Exports(study)


@pytest.mark.slow
@pytest.mark.parametrize("name, tol", [("cls", 1e-5), ("reg", 1e-4), ("vgg", 1e-5)])
def test_onnx_runtime_agrees_with_torch_on_1000_simulated_jets(study, exported, name, tol):
    """ONNX Runtime (CPU) against the torch model on raw energies: 1e-5 in probability, 1e-4 GeV in mass."""
    card, folder = exported[name]
    x = jet_images(1000, 3, 125, seed=7)  # (N, 3, 125, 125) raw energies, the file's channel order
    sess = ex.session(folder / "model.onnx")
    onnx_out = np.concatenate([sess.run(None, {"jets": x[i:i + 250]})[0] for i in range(0, 1000, 250)])
    tagger = load(study[name]).tagger
    with torch.no_grad():
        torch_out = tagger(torch.from_numpy(x)).numpy()
    assert onnx_out.shape == (1000,) and np.abs(onnx_out - torch_out).max() <= tol
    assert card["onnx"]["parity_with_torch"]["max_abs_diff"] <= tol
    assert sess.run(None, {"jets": x[:1]})[0].shape == (1,)  # the batch axis is dynamic, down to one jet


@pytest.mark.slow
def test_the_onnx_graph_takes_raw_energies_and_pins_its_opset(study, exported):
    import onnx

    _, folder = exported["cls"]
    graph = onnx.load(str(folder / "model.onnx"))
    (inp,) = graph.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "jets" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 125, 125]
    assert [o.name for o in graph.graph.output] == ["p_quark"]
    assert {o.domain: o.version for o in graph.opset_import}[""] == ex.OPSET
    # the normalisation is inside: raw energies in, the same number the loader-normalised network gives
    m = load(study["cls"])
    batch = next(iter(JetLoader(study["data"], "test", batch_size=8, shuffle=False, normalize="scale")))
    raw = next(iter(JetLoader(study["data"], "test", batch_size=8, shuffle=False, normalize="none")))
    with torch.no_grad():
        expected = m.task.prediction(m.tagger.net(batch.x), None).numpy()
    got = ex.session(folder / "model.onnx").run(None, {"jets": raw.x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cls", "reg", "vgg"])
def test_the_model_card_holds_data_budget_pretraining_and_the_test_metrics(study, exported, name):
    card, folder = exported[name]
    assert json.loads((folder / "model_card.json").read_text()) == card
    result = evaluate(study["data"], study[name], None, device="cpu")
    assert {k: v for k, v in card["test_metrics"].items() if k not in ("split", "jets")} == \
        {k: result["scalars"][k] for k in card["test_metrics"] if k not in ("split", "jets")}
    assert card["data"]["source_sha256"] == hashlib.sha256(study["h5"].read_bytes()).hexdigest()
    assert card["label_budget"]["label_fraction"] == 1.0 and card["label_budget"]["train_jets"] > 0
    pre = card["pretraining"]
    assert (pre["method"], pre.get("seed")) == (("simclr", 0) if name != "vgg" else (None, None))
    assert card["not_tested_on"] and card["intended_use"] and card["versions"]["onnxruntime"]
    md = (folder / "model_card.md").read_text()
    assert card["onnx"]["sha256"] in md and "## Not tested on" in md and "## Test metrics" in md
    assert hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest() == card["onnx"]["sha256"]


@pytest.mark.slow
def test_predict_through_the_export_equals_predict_through_torch(study, exported, tmp_path):
    _, folder = exported["reg"]
    a = predict(study["reg"], str(study["h5"]), str(tmp_path / "torch.parquet"))
    b = predict(str(folder), str(study["h5"]), str(tmp_path / "onnx.parquet"))
    ta, tb = table(tmp_path / "torch.parquet"), table(tmp_path / "onnx.parquet")
    np.testing.assert_allclose(ta["cols"]["mass_pred_gev"], tb["cols"]["mass_pred_gev"], atol=1e-4)
    assert tb["meta"]["jetlib.runtime"] == "onnxruntime" and a["mae"] == pytest.approx(b["mae"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.slow
def test_the_export_gate_passes_float32_rounding_and_stops_a_wrong_graph(study, exported):
    """The parity check before the card: a graph off by float32 rounding (2e-5, the size measured on the
    demo's cpu-preset ResNet-15) is exported, one off by more than TOLERANCE is refused in one line."""
    from jetlib.errors import TrainingError

    _, folder = exported["cls"]
    m, sess = load(study["cls"]), ex.session(folder / "model.onnx")

    class Off:  # the real session, its output shifted by `by`
        def __init__(self, by):
            self.by = by

        def run(self, names, feed):
            return [sess.run(names, feed)[0] + np.float32(self.by)]

    assert ex.parity(m, Off(2e-5))["max_abs_diff"] <= 2e-5 + 1e-5
    with pytest.raises(TrainingError, match=r"differs from torch by 0\.0002.*tolerance 0\.0001.*not exported"):
        ex.parity(m, Off(2e-4))


def test_export_refuses_a_tampered_graph(study, exported, tmp_path):
    import shutil

    _, folder = exported["cls"]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 1
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(Exception, match="does not match the sha256"):
        ex.load_export(str(copy))


@pytest.mark.slow
def test_the_docs_ten_lines_of_onnxruntime_score_a_file_as_predict_does(study, exported, tmp_path, monkeypatch,
                                                                         capsys):
    """docs/tagger.md's snippet, run as written: plain onnxruntime and h5py, no jetlib."""
    import re
    import shutil

    text = (Path(__file__).resolve().parents[1] / "docs" / "tagger.md").read_text()
    section = text[text.index("### Without jetlib"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "jetlib" not in code and len(code.strip().splitlines()) <= 12
    shutil.copytree(exported["cls"][1], tmp_path / "tagger")
    shutil.copy(study["h5"], tmp_path / "new_jets.h5")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "docs/tagger.md", "exec"), scope)  # noqa: S102 - the documentation's own code
    predict(study["cls"], str(study["h5"]), str(tmp_path / "p.parquet"))
    np.testing.assert_allclose(scope["p_quark"], table(tmp_path / "p.parquet")["cols"]["p_quark"], atol=1e-5)


@pytest.mark.s3
@pytest.mark.slow
def test_predict_export_and_the_server_model_read_and_write_the_store(study, s3_env, tmp_path):
    """``s3://`` everywhere: the model (its model.pt named), the scores, the export, and what serve loads."""
    from jetlib.data.store import open_store

    store = open_store(f"{s3_env}/cls")
    for name in ("model.pt", "run.json"):  # a training folder in the bucket
        store.put_file(name, Path(study["cls"]) / name)
    remote = predict(f"{s3_env}/cls/model.pt", str(study["h5"]), f"{s3_env}/scores.parquet")
    local = predict(study["cls"], str(study["h5"]), str(tmp_path / "local.parquet"))
    open_store(s3_env).get_file("scores.parquet", tmp_path / "remote.parquet")
    a, b = table(tmp_path / "remote.parquet"), table(tmp_path / "local.parquet")
    assert a["cols"] == b["cols"] and remote["roc_auc"] == local["roc_auc"]
    assert a["meta"]["jetlib.model_sha256"] == b["meta"]["jetlib.model_sha256"]
    card = ex.export(f"{s3_env}/cls", f"{s3_env}/export")
    loaded = ex.load_export(f"{s3_env}/export")  # what jetlib serve loads, checked against the card's sha256
    assert loaded.sha256 == card["onnx"]["sha256"] and loaded.column == "p_quark"
    x = torch.from_numpy(jet_images(8, 3, 125, seed=2))
    with torch.no_grad():
        np.testing.assert_allclose(loaded.runner()(x), load(study["cls"]).tagger(x).numpy(), atol=1e-5)


# --- the server's request checks (the server itself: tests/test_tagger_serve.py) ------------------

def test_densify_is_the_inverse_of_the_sparse_form_and_checks_every_part():
    from jetlib.tagger.serve import densify

    x = jet_images(3, 3, 20, seed=1)
    flat = x.reshape(3, -1)
    jets, index = np.nonzero(flat)
    counts = np.bincount(jets, minlength=3)
    np.testing.assert_array_equal(densify(index, flat[jets, index], counts, (3, 20, 20)), x)
    for bad, words in (((index, flat[jets, index][:-1], counts), "but 'value' has"),
                       ((index, flat[jets, index], counts + 1), "add up"),
                       ((index + 1200, flat[jets, index], counts), "outside the image")):
        with pytest.raises(ValueError, match=words):
            densify(*bad, (3, 20, 20))


def test_check_jets_names_the_shape_the_batch_limit_and_the_first_bad_pixel():
    from jetlib.tagger.serve import check_jets

    ok = check_jets(np.zeros((2, 3, 5, 5), np.float64), (3, 5, 5), 4)
    assert ok.dtype == np.float32 and ok.flags.c_contiguous
    with pytest.raises(ValueError, match=r"shape \[2, 5, 5, 3\], expected \[batch, 3, 5, 5\]"):
        check_jets(np.zeros((2, 5, 5, 3)), (3, 5, 5), 4)
    with pytest.raises(ValueError, match="5 jets in one request, more than the server's limit of 4"):
        check_jets(np.zeros((5, 3, 5, 5)), (3, 5, 5), 4)
    x = np.zeros((2, 3, 5, 5))
    x[1, 2, 3, 4] = np.inf
    with pytest.raises(ValueError, match="jet 1 has inf at channel 2, pixel 3,4"):
        check_jets(x, (3, 5, 5), 4)


@pytest.mark.slow
def test_the_benchmark_prints_one_json_line_with_its_baseline(tmp_path):
    """benchmarks/predict.py end to end at toy size: every number present and positive."""
    import subprocess
    import sys

    write_toy_h5(tmp_path / "toy.h5", n=64, size=125)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "predict.py"), "--source", str(tmp_path / "toy.h5"),
                        "--preset", "tiny", "--rounds", "1", "--naive-jets", "8", "--requests", "3"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (line,) = r.stdout.strip().splitlines()
    result = json.loads(line)
    rates = ("naive_jets_per_s", "predict_torch_jets_per_s", "predict_onnx_jets_per_s")
    latencies = [f"served_{k}_{q}_ms" for k in ("sparse_b1", "sparse_b64", "dense_b1") for q in ("p50", "p99")]
    assert all(result[k] > 0 for k in (*rates, *latencies)) and result["jets"] == 64
    assert result["torch_vs_naive"] == pytest.approx(result["predict_torch_jets_per_s"] / result["naive_jets_per_s"])
