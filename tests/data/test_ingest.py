import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from jetlib.cli import main
from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import format_manifest, open_dataset
from jetlib.data.splits import SplitConfig
from jetlib.data.store import LocalStore, sha256_bytes
from jetlib.errors import ConfigError
from tests.conftest import free_port, run_cli


def read_back(uri, split):
    """Every row of a split, dense and unnormalised, in storage order."""
    loader = JetLoader(uri, split, batch_size=7, shuffle=False, normalize="none")
    batches = list(loader)
    out = {"jet": torch.cat([b.jet for b in batches]).numpy(), "x": torch.cat([b.x for b in batches]).numpy()}
    if batches[0].y is not None:
        for k in ("y", "m0", "pt"):
            out[k] = torch.cat([getattr(b, k) for b in batches]).numpy()
    return out


CASES = [
    dict(layout="X_jets", axis="last", dtype="float32", chunks=True, compression="gzip"),
    dict(layout="X_jets", axis="first", dtype="float16", chunks=False, compression=None),
    dict(layout="X_jets", axis="last", dtype="float64", chunks=True, compression=None),
    dict(layout="jet", axis="first", dtype="float32", chunks=True, compression="gzip"),
    dict(layout="jet", axis="last", dtype="float16", chunks=True, compression="lzf"),
    dict(layout="jet", axis="first", dtype="float64", chunks=False, compression=None),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_round_trip_is_exact_for_every_layout(make_h5, tmp_path, case):
    path, src = make_h5(n=30, **case)
    cfg = IngestConfig(shard_rows=8, row_group_rows=4, block_mb=1)
    uri = ingest(path, str(tmp_path / "store"), cfg=cfg)
    seen = []
    for split in ("train", "val", "test"):
        got = read_back(uri, split)
        images = src["images"][got["jet"]]
        # exact: float16/32 come back as float32, float64 as float64 -> float32 in the loader;
        # compare against the source values widened the same way.
        np.testing.assert_array_equal(got["x"], images.astype(np.float32))
        np.testing.assert_array_equal(got["y"], src["y"][got["jet"]])
        np.testing.assert_array_equal(got["m0"], src["m0"][got["jet"]].astype(np.float32))
        seen += got["jet"].tolist()
    assert sorted(seen) == list(range(30))


def test_float64_values_are_stored_exactly(make_h5, tmp_path):
    from jetlib.data.shards import decode, parquet_file

    path, src = make_h5(n=12, dtype="float64")
    src["images"][0, 0, 60, 60] = 1 / 3  # not representable in float32
    import h5py
    with h5py.File(path, "a") as f:
        f["X_jets"][0, 60, 60, 0] = 1 / 3
    ds = open_dataset(ingest(path, str(tmp_path / "s")))
    assert ds.manifest["image"]["value_dtype"] == "float64"
    for split in ("train", "val", "test"):
        for shard in ds.shards(split):
            jet, sparse, scalars = decode(parquet_file(ds.read_shard(shard)).read())
            assert sparse.val.dtype == np.float64
            np.testing.assert_array_equal(sparse.to_dense((3, 125, 125)), src["images"][jet])
            np.testing.assert_array_equal(scalars["m0"], src["m0"][jet])


def test_manifest_contents(make_h5, tmp_path):
    path, src = make_h5(n=60)
    cfg = IngestConfig(split=SplitConfig(label_fractions=(0.1, 0.5, 1.0), seed=5), shard_rows=10, row_group_rows=5)
    ds = open_dataset(ingest(path, str(tmp_path / "s"), name="my jets!", cfg=cfg))
    m = ds.manifest
    assert m["name"].startswith("my-jets-") and ds.uri.endswith(m["name"])
    assert m["source"]["n_jets"] == 60 and m["source"]["path"] == "jets.h5"
    assert m["splits"]["train"]["rows"] + m["splits"]["val"]["rows"] + m["splits"]["test"]["rows"] == 60
    assert m["splits"]["test"]["class_counts"] == {"0": 6, "1": 6}
    assert [s["fraction"] for s in m["subsets"]] == [0.1, 0.5, 1.0]
    assert [s["rows"] for s in m["subsets"]] == [ds.rows("train", f) for f in (0.1, 0.5, 1.0)]
    for split in ("train", "val", "test"):
        for shard in ds.shards(split):
            data = ds.store.get_bytes(shard["key"])
            assert sha256_bytes(data) == shard["sha256"] and len(data) == shard["bytes"]
    # statistics come from the train split only
    train = read_back(ds.uri, "train")
    x = train["x"].astype(np.float64)
    np.testing.assert_allclose(m["stats"]["channels"]["mean"], x.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(m["stats"]["channels"]["std"], x.std(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(m["stats"]["channels"]["max"], x.max(axis=(0, 2, 3)))
    np.testing.assert_allclose(m["stats"]["m0"]["mean"], src["m0"][train["jet"]].mean())


def test_manifest_is_written_last(make_h5, tmp_path, monkeypatch):
    path, _ = make_h5(n=30)
    order = []
    real = LocalStore.put_bytes
    monkeypatch.setattr(LocalStore, "put_bytes", lambda self, k, d, **kw: (order.append(k), real(self, k, d, **kw)))
    ingest(path, str(tmp_path / "s"), cfg=IngestConfig(shard_rows=4, row_group_rows=2))
    assert order[-1] == "manifest.json" and "manifest.json" not in order[:-1] and len(order) > 5


def test_reingest_is_a_noop_with_the_same_uri(make_h5, tmp_path, monkeypatch):
    path, _ = make_h5(n=30)
    store = str(tmp_path / "s")
    uri = ingest(path, store)
    manifest = Path(uri) / "manifest.json"
    before = manifest.read_bytes()
    writes = []
    monkeypatch.setattr(LocalStore, "put_bytes", lambda self, k, d, **kw: writes.append(k))
    assert ingest(path, store) == uri
    assert writes == [] and manifest.read_bytes() == before


def test_other_settings_make_another_dataset(make_h5, tmp_path):
    path, _ = make_h5(n=30)
    a = ingest(path, str(tmp_path / "s"))
    b = ingest(path, str(tmp_path / "s"), cfg=IngestConfig(split=SplitConfig(seed=1)))
    assert a != b


def test_killed_ingest_leaves_no_manifest_and_resumes(make_h5, tmp_path, monkeypatch):
    path, _ = make_h5(n=40)
    cfg = IngestConfig(shard_rows=4, row_group_rows=2)
    reference = open_dataset(ingest(path, str(tmp_path / "ref"), cfg=cfg))

    real = LocalStore.put_bytes
    calls = []

    def dies_after_three(self, key, data, **kw):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(key)
        real(self, key, data, **kw)

    monkeypatch.setattr(LocalStore, "put_bytes", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        ingest(path, str(tmp_path / "s"), cfg=cfg)
    monkeypatch.setattr(LocalStore, "put_bytes", real)
    prefix = tmp_path / "s" / "datasets" / reference.manifest["name"]
    assert not (prefix / "manifest.json").exists() and len(list(prefix.rglob("*.parquet"))) == 3
    with pytest.raises(Exception, match="manifest.json is missing"):
        open_dataset(str(prefix))

    rewritten = []
    monkeypatch.setattr(LocalStore, "put_bytes", lambda self, k, d, **kw: (rewritten.append(k), real(self, k, d, **kw)))
    ds = open_dataset(ingest(path, str(tmp_path / "s"), cfg=cfg))
    assert not set(calls) & set(rewritten), "shards already in the store are not written again"
    for split in ("train", "val", "test"):
        assert [s["sha256"] for s in ds.shards(split)] == [s["sha256"] for s in reference.shards(split)]


def test_unlabelled_file(make_h5, tmp_path):
    path, src = make_h5(n=25, layout="jet", labelled=False)
    ds = open_dataset(ingest(path, str(tmp_path / "s")))
    assert not ds.labelled and ds.manifest["splits"]["train"]["class_counts"] is None
    got = read_back(ds.uri, "train")
    assert "y" not in got
    np.testing.assert_array_equal(got["x"], src["images"][got["jet"]])


def test_read_only_store_is_one_line_and_exit_3(make_h5, tmp_path):
    path, _ = make_h5(n=20)
    store = tmp_path / "ro"
    store.mkdir()
    store.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    # root ignores file modes unless it drops CAP_DAC_OVERRIDE, which setpriv does for the child
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"] if os.geteuid() == 0 else []
    r = run_cli("ingest", path, "--store", store, prefix=prefix)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() .count("\n") == 0 and "is not writable: Permission denied" in r.stderr
    assert list(store.iterdir()) == []


@pytest.fixture
def read_only_s3(seaweedfs):
    """(URL, key, secret, bucket): a bucket on the tests' SeaweedFS holding one object, and the credentials of
    its ``reader`` identity, whose actions are ``Read`` and ``List`` only (``tests/s3_server.py``). SeaweedFS
    checks every request's action against the identity's: ``weed/s3api/auth_credentials.go``
    ``authRequest`` -> ``Identity.CanDo``, so a PUT or a bucket creation is ``AccessDenied``."""
    import io
    import uuid

    from minio import Minio

    bucket = f"readonly-{uuid.uuid4().hex[:12]}"
    admin = Minio(seaweedfs.url.removeprefix("http://"), seaweedfs.admin.access_key, seaweedfs.admin.secret_key,
                  secure=False)
    admin.make_bucket(bucket)
    admin.put_object(bucket, "present.bin", io.BytesIO(b"1"), 1)
    return seaweedfs.url, seaweedfs.reader.access_key, seaweedfs.reader.secret_key, bucket


@pytest.mark.s3
def test_read_only_s3_credentials_are_one_line_and_exit_3(make_h5, read_only_s3):
    from minio import Minio

    path, _ = make_h5(n=20)
    url, key, secret, bucket = read_only_s3
    env = {"JETLIB_S3_ENDPOINT": url, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    r = run_cli("ingest", path, "--store", f"s3://{bucket}/datasets", env=env)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().count("\n") == 0 and f"access denied to s3://{bucket}/datasets" in r.stderr
    assert secret not in r.stderr and key not in r.stderr
    client = Minio(url.removeprefix("http://"), access_key=key, secret_key=secret, secure=False)
    names = [o.object_name for o in client.list_objects(bucket, recursive=True)]
    assert names == ["present.bin"]  # readable with these credentials, and nothing half-written


def test_store_that_is_a_file(make_h5, tmp_path, capsys):
    path, _ = make_h5(n=20)
    (tmp_path / "store").write_text("")
    assert main(["ingest", str(path), "--store", str(tmp_path / "store")]) == 3
    assert "is a file, not a folder" in capsys.readouterr().err


def test_unreachable_s3_store_is_one_line(make_h5, tmp_path, monkeypatch, capsys):

    path, _ = make_h5(n=20)
    monkeypatch.setenv("JETLIB_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("JETLIB_S3_RETRIES", "2")
    assert main(["ingest", str(path), "--store", "s3://bucket/x"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot reach object store http://127.0.0.1:" in err
    assert "connection refused (after 2 attempts)" in err


def test_s3_without_credentials(make_h5, monkeypatch, capsys):
    path, _ = make_h5(n=20)
    monkeypatch.setenv("JETLIB_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    assert main(["ingest", str(path), "--store", "s3://bkt/p"]) == 3
    assert "needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in capsys.readouterr().err


@pytest.mark.s3
def test_s3_round_trip_and_noop(make_h5, s3_env, capsys):
    path, src = make_h5(n=30)
    cfg = IngestConfig(shard_rows=8, row_group_rows=4)
    uri = ingest(path, s3_env, cfg=cfg)
    assert uri.startswith(s3_env + "/datasets/jets-")
    for split in ("train", "test"):
        got = read_back(uri, split)
        np.testing.assert_array_equal(got["x"], src["images"][got["jet"]])
    assert ingest(path, s3_env, cfg=cfg) == uri
    assert main(["inspect", uri]) == 0
    out = capsys.readouterr().out
    assert "jets      30 = train 20 + val 4 + test 6" in out


@pytest.mark.s3
def test_s3_shards_are_verified_and_cached(make_h5, s3_env):
    path, _ = make_h5(n=20)
    ds = open_dataset(ingest(path, s3_env))
    loader = JetLoader(ds, "train", batch_size=4, shuffle=False)
    first = torch.cat([b.x for b in loader])
    cached = list(loader.reader.cache_dir.glob("*.parquet"))
    assert len(cached) == len(ds.shards("train"))
    # a corrupted cache entry is detected and refetched, never used
    cached[0].write_bytes(b"garbage")
    again = JetLoader(ds, "train", batch_size=4, shuffle=False, cache_dir=str(loader.reader.cache_dir))
    assert torch.equal(torch.cat([b.x for b in again]), first)
    # a shard changed in the store after commit fails its checksum
    shard = ds.shards("train")[0]
    ds.store.put_bytes(shard["key"], b"tampered")
    with pytest.raises(Exception, match="checksum mismatch"):
        ds.read_shard(shard)


def test_cli_prints_uri_and_inspect_reads_it(make_h5, tmp_path):
    path, _ = make_h5(n=20)
    r = run_cli("ingest", path, "--store", tmp_path / "s", "--name", "demo")
    assert r.returncode == 0, r.stderr
    uri = r.stdout.strip()
    assert uri.startswith(str(tmp_path / "s" / "datasets" / "demo-")) and len(r.stdout.splitlines()) == 1
    r = run_cli("inspect", uri, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == os.path.basename(uri)
    r2 = run_cli("ingest", path, "--store", tmp_path / "s", "--name", "demo")
    assert r2.stdout.strip() == uri and "already ingested" in r2.stderr


def test_val_subsets_are_stored_as_tiers_and_read_back(make_h5, tmp_path):
    path, src = make_h5(n=80)
    cfg = IngestConfig(split=SplitConfig(label_fractions=(0.1, 0.75, 1.0), val_floor=2), shard_rows=10,
                       row_group_rows=5)
    ds = open_dataset(ingest(path, str(tmp_path / "s"), cfg=cfg))
    full = read_back(ds.uri, "val")
    assert len(full["jet"]) == ds.rows("val") == 8  # 4 per class
    for sub, want in zip(ds.manifest["subsets"], (4, 6, 8), strict=True):  # floor 2 per class, 3 (75%), all
        f = sub["fraction"]
        assert sub["val_rows"] == ds.rows("val", f) == want
        if f < 1:
            assert sub["val_per_class"] == want // 2 and sub["val_class_counts"] == {"0": want // 2, "1": want // 2}
    small, half = (set(torch.cat([b.jet for b in JetLoader(ds, "val", fraction=f, batch_size=64,
                                                              shuffle=False)]).tolist()) for f in (0.1, 0.75))
    assert small < half <= set(full["jet"].tolist())  # nested
    assert sorted(src["y"][sorted(small)].tolist()) == [0, 0, 1, 1]
    assert ds.validation_fraction(0.1, "fraction") == (0.1, "fraction")
    assert ds.validation_fraction(0.1, "full") == (None, "full")
    with pytest.raises(ConfigError, match="validation must be one of"):
        ds.validation_fraction(0.1, "half")
    assert "(validation with the same label budget)" in format_manifest(ds)
