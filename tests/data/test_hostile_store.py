"""The store under a hostile writer and a stalled endpoint: keys stay inside their prefix, claims are exclusive,
every call is bounded.

Real behaviour relied on, read at the pinned versions:

* minio 7.2.20 ``minio/helpers.py`` ``check_object_name``: a ``.`` or ``..`` segment raises ``ValueError``
  on the first call; jetlib refuses such a URI when the store is opened, and maps any client ``ValueError``
  to one line.
* minio 7.2.20 ``minio/helpers.py`` ``normalize_headers``: ``put_object`` turns an ``If-None-Match`` header into
  ``x-amz-meta-if-none-match`` user metadata, so the conditional PUT goes through ``presigned_put_object``.
* SeaweedFS, the server the S3 cases run against (``tests/s3_server.py``; the 4.48 binary, its source read at
  tag 4.44): ``weed/s3api/s3api_object_handlers_put.go`` ``putToFiler`` checks ``If-None-Match: *`` through
  ``checkConditionalHeaders`` -> ``validateConditionalHeaders`` (an existing object: ``ErrPreconditionFailed``,
  412) inside ``withObjectWriteLock`` (or in the owner filer's transaction, ``routedPut``), so of two racing
  conditional PUTs one wins. ``weed/s3api/s3api_path_validation.go`` ``validateRequestPath`` refuses a key
  that ``s3_constants.IsValidObjectKey`` (``weed/s3api/s3_constants/header.go``) rejects, one with a ``.`` or
  ``..`` segment once backslashes are slashes, with 400 ``InvalidRequest``; ``NormalizeObjectKey`` collapses
  ``//`` and drops a leading ``/``. ``test_seaweedfs_answers_as_the_store_relies_on`` checks both.
* MinIO RELEASE.2025-10-15T17-29-55Z ``cmd/object-handlers.go`` ``PutObjectHandler`` -> ``checkPreconditionsPUT``
  (``cmd/object-handlers-common.go``, ``isETagEqual`` treats ``*`` as any ETag) answers the same 412 under the
  object's namespace lock (``cmd/erasure-object.go`` ``putObject``); AWS S3 documents the same 412 for
  conditional writes, and stores any key literally, ``..`` included: jetlib's own key checks are what keep a
  name read back inside its prefix.
* urllib3 2.8.0 ``Timeout(connect=, read=)``: ``read`` bounds each wait for the server's bytes, so a server that
  accepts and never answers fails an attempt after the read timeout.
"""

import socket
import threading

import pytest

from jetlib.claim import CLAIM, claim
from jetlib.data.s3 import S3Store
from jetlib.data.store import LocalStore, open_store
from jetlib.errors import ConfigError, DataError, StoreError


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def any_store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(request.getfixturevalue("s3_env"))


@pytest.mark.parametrize("key,problem", [
    ("/etc/passwd", "is absolute"), ("../other/x.bin", "climbs out with '..'"), ("a/../../x", "climbs out"),
    ("a/./b", "'.' segment"), ("a//b", "empty"), ("a\x00b", "control character"), ("a\\..\\b", "backslash"),
])
def test_keys_that_leave_their_prefix_are_refused_on_both_stores(any_store, key, problem):
    any_store.put_bytes("inside.bin", b"x")
    for call in (lambda: any_store.get_bytes(key), lambda: any_store.put_bytes(key, b"y"),
                 lambda: any_store.delete_prefix(key), lambda: any_store.exists(key),
                 lambda: any_store.stored_sha256(key), lambda: any_store.put_new(key, b"y")):
        with pytest.raises(DataError, match=problem):
            call()
    assert any_store.list() == ["inside.bin"]


def test_a_symlink_inside_a_local_store_cannot_lead_outside(tmp_path):
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    store = LocalStore(tmp_path / "store")
    store.put_bytes("ok.bin", b"1")
    (tmp_path / "store" / "link").symlink_to(outside)
    with pytest.raises(DataError, match="leads outside the store"):
        store.get_bytes("link/keep.txt")
    with pytest.raises(DataError, match="leads outside the store"):
        store.delete_prefix("link")
    assert (outside / "keep.txt").read_text() == "precious"


def test_s3_uris_with_dot_segments_are_one_line():
    for uri in ("s3://bucket/a/../b", "s3://bucket/./x", "s3://bucket/runs/.."):
        with pytest.raises(ConfigError, match=r"a '\.' or '\.\.' segment in an s3:// URI is not allowed"):
            S3Store(uri)


def _raw_client():
    """A boto3 client of the test endpoint, writing around jetlib as another client of the bucket would (the
    minio client refuses a ``.`` or ``..`` segment itself, so it could not send one)."""
    import os

    import boto3

    return boto3.client("s3", endpoint_url=os.environ["JETLIB_S3_ENDPOINT"], region_name="us-east-1",
                        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])


@pytest.mark.s3
@pytest.mark.parametrize("name", ["a\x01b.bin", "folder/", "a/../b.bin", "./c.bin"])
def test_listing_skips_objects_whose_names_are_not_safe_keys(s3_env, name):
    """Another S3 client can write names no jetlib call may use. SeaweedFS stores a control character and a
    folder marker (``folder/``) as written, and refuses a ``.`` or ``..`` segment (400); AWS S3 stores all four.
    Either way the listing holds the safe key only."""
    from botocore.exceptions import ClientError

    store = open_store(s3_env)
    store.put_bytes("good.bin", b"1")
    try:
        _raw_client().put_object(Bucket=store.bucket, Key=f"{store.prefix}/{name}", Body=b"2")
    except ClientError as e:  # refused by the server: nothing hostile can be listed
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response
    assert store.list() == ["good.bin"]


@pytest.mark.s3
def test_seaweedfs_answers_as_the_store_relies_on(seaweedfs, monkeypatch):
    """The tests' SeaweedFS (always, whatever JETLIB_TEST_S3_ENDPOINT says): a second ``If-None-Match: *`` PUT
    is 412 ``PreconditionFailed``; a ``.`` or ``..`` segment is 400 ``InvalidRequest`` and nothing is stored;
    ``a//b`` is stored as ``a/b``. The functions are named in this module's docstring."""
    from datetime import timedelta

    import urllib3
    from botocore.exceptions import ClientError
    from minio import Minio

    monkeypatch.setenv("JETLIB_S3_ENDPOINT", seaweedfs.url)
    for name, value in seaweedfs.admin.env().items():
        monkeypatch.setenv(name, value)
    raw, bucket = _raw_client(), "jetlib-rules"
    raw.create_bucket(Bucket=bucket)
    client = Minio(seaweedfs.url.removeprefix("http://"), seaweedfs.admin.access_key, seaweedfs.admin.secret_key,
                   secure=False)
    url = client.presigned_put_object(bucket, "claim", expires=timedelta(minutes=5))
    answers = [urllib3.request("PUT", url, body=body, headers={"If-None-Match": "*"}) for body in (b"1", b"2")]
    assert [a.status for a in answers] == [200, 412] and b"<Code>PreconditionFailed</Code>" in answers[1].data
    for key in ("x/../claim", "../claim", "x/./y", "x\\..\\y"):
        with pytest.raises(ClientError) as e:
            raw.put_object(Bucket=bucket, Key=key, Body=b"3")
        assert e.value.response["Error"]["Code"] == "InvalidRequest", key
    raw.put_object(Bucket=bucket, Key="a//b", Body=b"4")
    assert sorted(o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"]) == ["a/b", "claim"]
    assert raw.get_object(Bucket=bucket, Key="claim")["Body"].read() == b"1"


def test_put_new_creates_once(any_store):
    assert any_store.put_new("c/.claim", b"first") is True
    assert any_store.put_new("c/.claim", b"second") is False
    assert any_store.get_bytes("c/.claim") == b"first"


def test_put_new_has_one_winner_in_a_race(any_store):
    wins = []
    barrier = threading.Barrier(4)

    def race(i):
        barrier.wait()
        if any_store.put_new("raced", f"{i}".encode()):
            wins.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and any_store.get_bytes("raced") == str(wins[0]).encode()


def test_a_claim_admits_its_own_run_and_refuses_another(any_store):
    run = {"config": {"seed": 0, "lr": 0.1, "widths": (4, 8)}, "dataset": "abc123abc123"}
    digest = claim(any_store, "pretrain", run, "seed 0")
    assert claim(any_store, "pretrain", {**run, "config": {**run["config"], "widths": [4, 8]}}) == digest  # resume
    other = {**run, "config": {**run["config"], "seed": 1}}
    with pytest.raises(ConfigError) as e:
        claim(any_store, "pretrain", other, "seed 1")
    line = str(e.value)
    assert "holds a pretrain run (seed 0) with different settings seed" in line and "\n" not in line
    assert CLAIM in line and any_store.list() == []  # hidden: listings and the report never see the claim
    with pytest.raises(ConfigError, match="with a different dataset"):
        claim(any_store, "pretrain", {**run, "dataset": "def456def456"})


def test_a_hostile_claim_cannot_break_the_line(any_store):
    import json

    any_store.put_new(CLAIM, json.dumps({"format": "jetlib.claim/1", "run": "x", "step": "pre\ntrain",
                                          "host": "h\x1b[31m", "identity": {"config": {"a\nb": 1}}}).encode())
    with pytest.raises(ConfigError) as e:
        claim(any_store, "pretrain", {"config": {"a\nb": 2}})
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)


class _Silent:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a stalled endpoint)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted, self.held = 0, []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)  # kept open, never read from or written to

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.fixture
def silent(monkeypatch):
    server = _Silent()
    monkeypatch.setenv("JETLIB_S3_ENDPOINT", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "KEYTHATMUSTNOTLEAK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRETTHATMUSTNOTLEAK")
    monkeypatch.setenv("JETLIB_S3_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("JETLIB_S3_READ_TIMEOUT", "0.2")
    yield server
    server.close()


def test_a_stalled_endpoint_fails_each_attempt_and_names_itself(silent, monkeypatch):
    monkeypatch.setenv("JETLIB_S3_RETRIES", "3")
    with pytest.raises(StoreError) as e:
        S3Store("s3://bucket/run").exists("manifest.json")
    line = str(e.value)
    assert f"cannot reach object store http://127.0.0.1:{silent.port}" in line
    assert "no answer within 0.2 s (read timeout)" in line and "after 3 attempts" in line
    assert silent.accepted == 3  # one connection per attempt: each one timed out, none hung
    assert "KEYTHATMUSTNOTLEAK" not in line and "SECRETTHATMUSTNOTLEAK" not in line


def test_the_deadline_stops_retrying(silent, monkeypatch):
    """100 attempts allowed, but no attempt starts after JETLIB_S3_DEADLINE (the backoff alone passes it)."""
    monkeypatch.setenv("JETLIB_S3_RETRIES", "100")
    monkeypatch.setenv("JETLIB_S3_DEADLINE", "1")
    with pytest.raises(StoreError, match=r"after [1-4] attempts"):
        S3Store("s3://bucket/run").get_bytes("manifest.json")
    assert 1 <= silent.accepted <= 4


@pytest.mark.parametrize("name,value", [("JETLIB_S3_READ_TIMEOUT", "abc"), ("JETLIB_S3_RETRIES", "0"),
                                        ("JETLIB_S3_DEADLINE", "-5"), ("JETLIB_S3_CONNECT_TIMEOUT", "inf")])
def test_bad_limits_are_one_line(silent, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name} must be a positive"):
        S3Store("s3://bucket/run").exists("k")
    assert silent.accepted == 0


@pytest.mark.s3
def test_a_manifest_on_s3_with_a_climbing_key_is_refused_before_any_read(s3_env, tmp_path):
    """The same manifest check guards both stores: a key read back never leaves its dataset's prefix."""
    import json

    from jetlib.data.ingest import IngestConfig, ingest
    from jetlib.data.manifest import open_dataset
    from tests.conftest import write_h5

    write_h5(tmp_path / "jets.h5", n=40, size=16)
    uri = ingest(tmp_path / "jets.h5", s3_env, cfg=IngestConfig(image_size=None))
    store = open_store(uri)
    secret = open_store(s3_env).child("private")
    secret.put_bytes("train/t0-00000.parquet", store.get_bytes(open_dataset(uri).shards("train")[0]["key"]))
    m = json.loads(store.get_bytes("manifest.json"))
    m["splits"]["train"]["shards"][0]["key"] = "train/../../../private/train/t0-00000.parquet"
    store.put_bytes("manifest.json", json.dumps(m).encode())
    with pytest.raises(DataError, match=r"splits.train.shards\[0\]: key .* climbs out with '\.\.'"):
        open_dataset(uri)
