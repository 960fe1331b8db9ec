"""Run records: one writer of run.json (provenance added once), one reader, a typed NotFound from both stores."""

import ast
import json
from pathlib import Path

import pytest
import torch

from jetlib import checkpoint as ck
from jetlib import records
from jetlib.data.store import NotFound, open_store
from jetlib.errors import ConfigError, StoreError


def test_write_run_adds_format_time_version_and_provenance_once(tmp_path):
    store = open_store(str(tmp_path))
    run = records.write_run(store, records.PRETRAIN, {"encoder": {"key": "encoder.pt"}, "final": {"x": float("nan")}})
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert list(on_disk)[:3] == ["format", "created", "jetlib_version"] and list(on_disk)[-1] == "provenance"
    assert on_disk["format"] == "jetlib.pretrain/2" and on_disk["encoder"] == {"key": "encoder.pt"}
    assert on_disk["final"] == {"x": None}  # strict JSON: NaN is written as null
    assert on_disk["provenance"]["jetlib"] == run["jetlib_version"] == on_disk["jetlib_version"]
    assert on_disk["provenance"]["git_commit"] == run["provenance"]["git_commit"]
    assert records.read_run_json(str(tmp_path), records.PRETRAIN, "--init", checked=False)["created"] == run["created"]
    with pytest.raises(ValueError, match="adds provenance itself"):
        records.write_run(store, records.MODEL, {"provenance": {}})
    with pytest.raises(ValueError, match="not a run.json format"):
        records.write_run(store, records.RESULT, {})


def test_read_run_json_refuses_what_is_not_a_finished_run_of_the_kind(tmp_path):
    with pytest.raises(ConfigError, match=r"^--init \S+: no finished run there \(no run.json\)$"):
        records.read_run_json(str(tmp_path / "empty"), records.PRETRAIN, "--init")
    (tmp_path / "file").write_text("x")  # a URI that is a file holds no run either
    with pytest.raises(ConfigError, match="no finished run there"):
        records.read_run_json(str(tmp_path / "file"), records.PRETRAIN, "--init")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("{")
    with pytest.raises(ConfigError, match="run.json is not JSON"):
        records.read_run_json(str(tmp_path / "bad"), records.MODEL, "--model")
    records.write_run(open_store(str(tmp_path / "model")), records.MODEL, {"kind": "resnet"})
    with pytest.raises(ConfigError, match="is 'jetlib.model/2', expected a jetlib.pretrain/2 run"):
        records.read_run_json(str(tmp_path / "model"), records.PRETRAIN, "--init")
    # a tuple accepts either
    assert records.read_run_json(str(tmp_path / "model"), (records.PRETRAIN, records.MODEL), "x",
                                 checked=False)["kind"] == "resnet"  # a toy body: the schema is tests/test_schemas.py's


def test_a_version_1_record_is_refused_by_name(tmp_path):
    """Version 2 renamed what model.pt and run.json hold: an older run is one line, never half read."""
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text(json.dumps({"format": "jetlib.model/1", "kind": "resnet"}))
    with pytest.raises(ConfigError, match=r"is 'jetlib.model/1', expected a jetlib.model/2 run"):
        records.read_run_json(str(tmp_path / "old"), records.MODEL, "--model")


def test_read_run_returns_the_verified_artifact_it_names(tmp_path):
    store = open_store(str(tmp_path))
    record = ck.save_object(store, "model.pt", {"w": torch.arange(3)})
    records.write_run(store, records.MODEL, {"model": record})
    blob, run = records.read_run(str(tmp_path), "model", records.MODEL, "--model", checked=False)  # a toy body
    assert torch.equal(blob["w"], torch.arange(3)) and run["model"] == record
    with pytest.raises(ConfigError, match="names no encoder"):
        records.read_run(str(tmp_path), "encoder", records.MODEL, "--model")


def _assert_not_found(store):
    for call in (lambda: store.get_bytes("missing/key.json"), lambda: ck.load_object(store, "nothing.pt")):
        with pytest.raises(NotFound, match="missing/key.json does not exist|nothing.pt does not exist") as e:
            call()
        assert isinstance(e.value, StoreError) and e.value.exit_code == 3


def test_a_missing_object_is_notfound_on_the_local_store(tmp_path):
    store = open_store(str(tmp_path))
    _assert_not_found(store)
    with pytest.raises(NotFound):
        store.get_file("missing.bin", tmp_path / "copy.bin")
    assert not (tmp_path / "copy.bin").exists()
    (tmp_path / "a").write_text("x")
    with pytest.raises(NotFound):  # below a file: no such key either, not an I/O failure
        store.get_bytes("a/b")


@pytest.mark.s3
def test_a_missing_object_is_notfound_on_s3(s3_new_bucket, tmp_path):
    """minio/minio-py 7.2.20, minio/api.py ``Minio._url_open``: a GET of a missing key raises ``S3Error``
    with the server's code (``NoSuchKey``; ``NoSuchBucket`` when the bucket is missing), which
    ``S3Store.get_bytes`` types as NotFound; SeaweedFS answers with both codes, as MinIO and AWS S3 do."""
    store = open_store(s3_new_bucket)
    _assert_not_found(store)  # the bucket does not exist yet
    store.put_bytes("present.json", b"{}")
    _assert_not_found(store)  # the bucket exists, the key does not
    with pytest.raises(NotFound):
        store.get_file("missing.bin", tmp_path / "copy.bin")
    assert store.get_bytes("present.json") == b"{}"


def test_the_formats_are_spelled_in_jetlib_records_only():
    """No module but jetlib/records.py has a string constant that is a record format (docstrings may name them)."""
    formats = {records.PRETRAIN, records.MODEL, records.RESULT}
    root = Path(__file__).resolve().parents[1]
    spelled = [f"{p.relative_to(root)}:{node.lineno}" for d in ("jetlib", "components", "pipelines", "benchmarks")
               for p in sorted((root / d).rglob("*.py")) if p.name != "records.py"
               for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, ast.Constant) and node.value in formats]
    assert spelled == []
