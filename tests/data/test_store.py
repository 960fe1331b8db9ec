"""One contract for both stores: a local folder and S3 (the tests' SeaweedFS server, or the endpoint
JETLIB_TEST_S3_ENDPOINT names). The failures a real server will not produce on demand (a 503, a dropped
connection) and the count of calls a retry policy makes come from a stand-in client, ``_Flaky``."""

import pytest

from jetlib.data import s3 as store_mod  # the S3 client, its retries and sleeps live there
from jetlib.data.s3 import S3Store
from jetlib.data.store import LocalStore, open_store, sha256_bytes
from jetlib.errors import ConfigError, StoreError


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def any_store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(request.getfixturevalue("s3_env"))


def test_contract(any_store):
    s = any_store
    s.check_writable()
    assert s.list() == [] and not s.exists("a/b.bin") and s.stored_sha256("a/b.bin") is None
    s.put_bytes("a/b.bin", b"hello")
    s.put_bytes("a/c/d.bin", b"world", sha256=sha256_bytes(b"world"))
    s.put_bytes("z.json", b"{}")
    assert s.get_bytes("a/b.bin") == b"hello" and s.exists("a/b.bin")
    assert s.list() == ["a/b.bin", "a/c/d.bin", "z.json"] and s.list("a/c") == ["a/c/d.bin"]
    assert s.stored_sha256("a/c/d.bin") == sha256_bytes(b"world")
    assert s.stored_sha256("a/b.bin") == sha256_bytes(b"hello")
    child = s.child("a")
    assert child.get_bytes("c/d.bin") == b"world" and child.uri == s.uri + "/a"
    s.put_bytes("a/b.bin", b"replaced")
    assert s.get_bytes("a/b.bin") == b"replaced"
    with pytest.raises(StoreError, match="does not exist"):
        s.get_bytes("missing.bin")
    s.delete_prefix("a")
    assert s.list() == ["z.json"]


def test_files_round_trip_on_both_stores(any_store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00jets" * 1000)
    any_store.put_file("f/src.bin", src)
    assert any_store.stored_sha256("f/src.bin") == sha256_bytes(src.read_bytes())
    any_store.get_file("f/src.bin", tmp_path / "back" / "copy.bin")
    assert (tmp_path / "back" / "copy.bin").read_bytes() == src.read_bytes()
    assert [p.name for p in (tmp_path / "back").iterdir()] == ["copy.bin"]  # no temporary left over
    with pytest.raises(StoreError, match="does not exist"):
        any_store.get_file("f/missing.bin", tmp_path / "back" / "missing.bin")
    assert not (tmp_path / "back" / "missing.bin").exists()


def test_keys_and_prefixes_mean_the_same_on_both_stores(any_store):
    s = any_store
    for key in ("ck/epoch-0001.pt", "ck/epoch-0001.pt.old", "ck/epoch-0002.pt", "ck/sub/x.bin", "ckpt.json"):
        s.put_bytes(key, key.encode())
    # a key lists itself; a folder lists what is below it, never a sibling sharing the string prefix
    assert s.list("ck/epoch-0001.pt") == ["ck/epoch-0001.pt"]
    assert s.list("ck/sub/") == s.list("ck/sub") == ["ck/sub/x.bin"]
    assert s.list("ck") == ["ck/epoch-0001.pt", "ck/epoch-0001.pt.old", "ck/epoch-0002.pt", "ck/sub/x.bin"]
    assert s.list("ck/epoch") == [] and s.list("nothing") == []
    s.delete_prefix("ck/epoch-0001.pt")  # one object
    assert s.list() == ["ck/epoch-0001.pt.old", "ck/epoch-0002.pt", "ck/sub/x.bin", "ckpt.json"]
    s.delete_prefix("ck/sub")  # a prefix
    assert s.list() == ["ck/epoch-0001.pt.old", "ck/epoch-0002.pt", "ckpt.json"]
    s.delete_prefix("ck/epoch")  # not a folder: deletes nothing
    assert len(s.list()) == 3
    assert s.child("ck").list() == ["epoch-0001.pt.old", "epoch-0002.pt"]
    s.delete_prefix("")
    assert s.list() == []


def test_checkpoints_keep_only_the_newest_on_both_stores(any_store):
    from jetlib.checkpoint import Checkpoints

    ckpts = Checkpoints(any_store.child("checkpoints"))
    for epoch in range(4):
        ckpts.save({"epoch": epoch}, epoch)
    assert any_store.list() == ["checkpoints/epoch-0003.pt", "checkpoints/latest.json"]
    assert ckpts.latest()["epoch"] == 3
    kept = Checkpoints(any_store.child("kept"), keep_every=2)
    for epoch in range(4):
        kept.save({"epoch": epoch}, epoch)
    assert any_store.list("kept") == ["kept/epoch-0000.pt", "kept/epoch-0002.pt", "kept/epoch-0003.pt",
                                      "kept/latest.json"]


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    s = LocalStore(tmp_path)
    s.put_bytes("x/y.bin", b"1" * 1000)
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["y.bin"]


def test_uris():
    assert isinstance(open_store("s3://bucket/a/b/"), S3Store)
    assert open_store("s3://bucket/a/b/").uri == "s3://bucket/a/b"
    assert isinstance(open_store("file:///tmp/x"), LocalStore) and open_store("file:///tmp/x").uri == "/tmp/x"
    with pytest.raises(ConfigError, match="unsupported store URI"):
        open_store("gs://bucket/x")
    for bad in ("s3://h/x", "s3://Bad_Bucket/x", "s3://-bucket/x", "s3://a..b/x", "s3://" + "b" * 64 + "/x"):
        with pytest.raises(ConfigError, match="invalid bucket name"):
            open_store(bad)
    assert open_store("s3://my.bucket-01/x").bucket == "my.bucket-01"


class _Flaky:
    """A stand-in minio client whose put_object fails ``failures`` times first."""

    def __init__(self, failures, exc):
        self.failures, self.exc, self.calls = failures, exc, 0

    def bucket_exists(self, bucket):
        return True

    def put_object(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return None


def _use_client(monkeypatch, client):
    monkeypatch.setenv("JETLIB_S3_ENDPOINT", "http://user:hunter2@127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKEYTHATMUSTNOTLEAK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRETTHATMUSTNOTLEAK")
    monkeypatch.setattr(store_mod, "_client", lambda *a: client)
    monkeypatch.setattr(store_mod.time, "sleep", lambda s: None)


def test_transient_errors_are_retried(monkeypatch):
    from minio.error import ServerError

    client = _Flaky(2, ServerError("busy", 503))
    _use_client(monkeypatch, client)
    S3Store("s3://bkt/p").put_bytes("k", b"v")
    assert client.calls == 3


def test_retries_give_up_with_one_line_and_no_secret(monkeypatch):
    from urllib3.exceptions import ProtocolError

    monkeypatch.setenv("JETLIB_S3_RETRIES", "3")
    client = _Flaky(99, ProtocolError("Connection aborted.", ConnectionResetError()))
    _use_client(monkeypatch, client)
    with pytest.raises(StoreError) as e:
        S3Store("s3://bkt/p").put_bytes("k", b"v")
    msg = str(e.value)
    assert client.calls == 3 and "after 3 attempts" in msg and "http://127.0.0.1:9" in msg
    for secret in ("hunter2", "user:", "AKEYTHATMUSTNOTLEAK", "SECRETTHATMUSTNOTLEAK"):
        assert secret not in msg


def test_access_denied_is_not_retried(monkeypatch):
    from minio.error import S3Error

    denied = S3Error(None, "AccessDenied", "Access Denied.", "/b/p/k", "req", "host")
    client = _Flaky(99, denied)
    _use_client(monkeypatch, client)
    with pytest.raises(StoreError, match="access denied to s3://bkt/p/k"):
        S3Store("s3://bkt/p").put_bytes("k", b"v")
    assert client.calls == 1


def test_missing_endpoint(monkeypatch):
    monkeypatch.delenv("JETLIB_S3_ENDPOINT", raising=False)
    with pytest.raises(StoreError, match="need JETLIB_S3_ENDPOINT"):
        S3Store("s3://bkt/p").exists("k")


@pytest.mark.s3
def test_missing_bucket_is_created(s3_new_bucket):
    s = open_store(s3_new_bucket)
    assert s.list() == []  # no bucket yet: an empty listing, not an error
    s.put_bytes("k", b"v")
    assert s.list() == ["k"]


@pytest.mark.s3
def test_writers_racing_to_create_a_missing_bucket_all_succeed(s3_new_bucket):
    """Steps started together (DDP ranks, a loop's trainings) each find the bucket missing and create it: the
    losers' ``BucketAlreadyOwnedByYou`` (SeaweedFS, MinIO and AWS S3 alike) means the bucket is there."""
    import threading

    stores = [open_store(s3_new_bucket).child(f"w{i}") for i in range(4)]
    for s in stores:
        assert s.list() == []  # each one has seen the bucket missing
    barrier, errors = threading.Barrier(len(stores)), []

    def write(store):
        barrier.wait()
        try:
            store.put_bytes("k", store.uri.encode())
        except StoreError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert open_store(s3_new_bucket).list() == [f"w{i}/k" for i in range(4)]
