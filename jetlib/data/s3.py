"""``s3://bucket/prefix`` stores (MinIO in the cluster, any S3 API elsewhere) through the ``minio`` client.

The endpoint, credentials, timeouts and retries come from the environment (see
:mod:`jetlib.data.store` for the table). Every call goes through :meth:`S3Store._call`:
transient failures are retried with exponential backoff, each attempt is bounded by the
connect and read timeouts, no attempt starts after ``JETLIB_S3_DEADLINE``, and the one
error line names the endpoint, never a credential.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
import uuid
from functools import cache
from urllib.parse import urlsplit

from jetlib.data.keys import key_problem
from jetlib.data.store import NotFound, Store, _checked, _hidden, sha256_bytes
from jetlib.errors import ConfigError, DataError, StoreError

log = logging.getLogger(__name__)

# Error codes an S3 server returns for conditions that pass on their own.
_TRANSIENT_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "Throttling"}
# Error codes for "no such object": get_bytes raises NotFound for them, a stat answers None.
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"}
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # the S3 bucket-naming rules
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "AccountProblem", "InvalidToken", "ExpiredToken"}


def _endpoint() -> tuple[str, bool, str]:
    """(host[:port], secure, printable URL) from ``JETLIB_S3_ENDPOINT``."""
    raw = os.environ.get("JETLIB_S3_ENDPOINT", "").strip()
    if not raw:
        raise StoreError("s3:// stores need JETLIB_S3_ENDPOINT (e.g. http://minio.kubeflow:9000)")
    parts = urlsplit(raw if "://" in raw else f"https://{raw}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"JETLIB_S3_ENDPOINT must be an http:// or https:// URL, got scheme {parts.scheme!r}")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return host, parts.scheme == "https", f"{parts.scheme}://{host}"  # userinfo never printed


def _env_number(name: str, default: float, cast=float):
    """A positive number from the environment (a float, or a whole number >= 1 when ``cast`` is int)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a positive {'whole ' if cast is int else ''}number, got {raw!r}")
    return value


def _limits() -> tuple[float, float, int, float]:
    """(connect timeout s, read timeout s, attempts, deadline s) from the environment."""
    return (_env_number("JETLIB_S3_CONNECT_TIMEOUT", 10.0), _env_number("JETLIB_S3_READ_TIMEOUT", 60.0),
            _env_number("JETLIB_S3_RETRIES", 5, int), _env_number("JETLIB_S3_DEADLINE", 300.0))


@cache
def _http(connect: float, read: float):
    """One urllib3 pool per timeout pair, shared by the minio client and the conditional PUT."""
    import certifi
    import urllib3

    # Retries are ours (see S3Store._call), so that an unreachable store fails in
    # seconds with one clear line instead of urllib3's own silent retry loop. The read
    # timeout bounds each wait for the server (urllib3 Timeout.read: per socket read),
    # so a stalled endpoint fails an attempt instead of hanging on it.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect, read=read),
        retries=False,
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )


@cache
def _client(host: str, secure: bool, access: str, secret: str, token: str | None, region: str,
            connect: float = 10.0, read: float = 60.0):
    from minio import Minio

    return Minio(host, access_key=access, secret_key=secret, session_token=token, secure=secure,
                 region=region, http_client=_http(connect, read))


def _short_reason(exc: BaseException) -> str:
    """A one-phrase reason for a connection-level failure."""
    seen = exc
    for _ in range(6):  # walk the cause chain to the socket error
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if "read timed out" in str(seen).lower() or type(seen).__name__ == "ReadTimeoutError":
            return f"no answer within {_limits()[1]:g} s (read timeout)"
        if isinstance(seen, TimeoutError) or "timed out" in str(seen).lower():
            return "timed out"
        if "Name or service not known" in str(seen) or "NameResolution" in type(seen).__name__:
            return "unknown host"
        nxt = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen:
            break
        seen = nxt
    return type(exc).__name__


class S3Store(Store):
    """``s3://bucket/prefix`` on any S3 API, through the ``minio`` client."""

    def __init__(self, uri: str):
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"not an s3:// URI: {uri!r} (expected s3://bucket/prefix)")
        if not _BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
            # checked here: the server would answer with an error that reads like a store failure
            raise ConfigError(f"invalid bucket name {parts.netloc!r} in {uri}: S3 bucket names are 3-63 "
                              f"lowercase letters, digits, dots and hyphens, starting and ending with a "
                              f"letter or digit")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        if self.prefix and {".", ".."} & set(self.prefix.split("/")):
            # checked here: the minio client refuses such names with a ValueError
            # (minio 7.2.20, minio/helpers.py, check_object_name) on the first call
            raise ConfigError(f"{uri}: a '.' or '..' segment in an s3:// URI is not allowed (S3 keys are not "
                              f"paths; write the prefix out in full)")
        self.uri = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._bucket_checked = False

    @property
    def client(self):
        host, secure, _ = _endpoint()
        access = os.environ.get("AWS_ACCESS_KEY_ID")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise StoreError(f"{self.uri} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
        connect, read, _, _ = _limits()
        return _client(host, secure, access, secret, os.environ.get("AWS_SESSION_TOKEN"),
                       os.environ.get("AWS_REGION", "us-east-1"), connect, read)

    def _name(self, key: str) -> str:
        key = _checked(key, self.uri)
        return f"{self.prefix}/{key}".strip("/") if self.prefix else key

    def child(self, prefix):
        return S3Store(f"s3://{self.bucket}/{self._name(prefix.strip('/'))}")

    def _call(self, what: str, fn):
        """Run one S3 operation with retries on transient failures; map the rest to StoreError."""
        from minio.error import S3Error, ServerError
        from urllib3.exceptions import HTTPError

        _, _, attempts, deadline = _limits()
        delay, start = 0.5, time.monotonic()
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except ValueError as e:  # the minio client's own argument checks: bad input, not the network
                raise DataError(f"{what}: refused by the S3 client: {e}") from None
            except S3Error as e:
                if e.code in _DENIED_CODES:
                    raise StoreError(f"access denied to {what} ({e.code}): check the credentials "
                                     f"and the bucket policy") from None
                if e.code not in _TRANSIENT_CODES:
                    raise StoreError(f"{what} failed: {e.code}: {e.message}") from None
                reason = e.code
            except ServerError as e:
                reason = f"HTTP {e.status_code}"
            except (HTTPError, OSError) as e:
                reason = _short_reason(e)
            if attempt == attempts:
                break
            if time.monotonic() - start + delay > deadline:  # JETLIB_S3_DEADLINE: no attempt starts after it
                attempts = attempt
                break
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise StoreError(f"cannot reach object store {_endpoint()[2]} for {what}: {reason} "
                         f"(after {attempts} attempts)")

    def _ensure_bucket(self):
        if self._bucket_checked:
            return
        if not self._call(f"s3://{self.bucket}", lambda: self.client.bucket_exists(self.bucket)):
            self._call(f"creating bucket {self.bucket}", self._make_bucket)
        self._bucket_checked = True

    def _make_bucket(self):
        from minio.error import S3Error

        try:
            self.client.make_bucket(self.bucket)
        except S3Error as e:
            # Steps started together (DDP ranks, a loop's trainings) all find the bucket missing; every one
            # but the first is told the bucket is already its own (SeaweedFS, MinIO and AWS S3 alike): it
            # is there, which is all the caller asked. Another owner's bucket (BucketAlreadyExists) is not.
            if e.code != "BucketAlreadyOwnedByYou":
                raise

    def put_bytes(self, key, data, *, sha256=None):
        self._ensure_bucket()
        meta = {"sha256": sha256 or sha256_bytes(data)}
        self._call(self.key_uri(key), lambda: self.client.put_object(
            self.bucket, self._name(key), io.BytesIO(data), len(data), metadata=meta))

    def get_bytes(self, key):
        from minio.error import S3Error

        def fetch():
            try:
                resp = self.client.get_object(self.bucket, self._name(key))
            except S3Error as e:
                if e.code in _MISSING_CODES:  # typed here, from the server's code, not matched on text later
                    raise NotFound(f"{self.key_uri(key)} does not exist") from None
                raise
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return self._call(self.key_uri(key), fetch)

    def _stat(self, key):
        from minio.error import S3Error

        def stat():
            try:
                return self.client.stat_object(self.bucket, self._name(key))
            except S3Error as e:
                if e.code in _MISSING_CODES:
                    return None
                raise

        return self._call(self.key_uri(key), stat)

    def exists(self, key):
        return self._stat(key) is not None

    def stored_sha256(self, key):
        st = self._stat(key)
        if st is None:
            return None
        recorded = (st.metadata or {}).get("x-amz-meta-sha256")
        return recorded or sha256_bytes(self.get_bytes(key))

    def list(self, prefix=""):
        from minio.error import S3Error

        base = self._name(prefix.rstrip("/"))
        strip = len(self.prefix) + 1 if self.prefix else 0

        def listing():
            try:
                return [o.object_name for o in self.client.list_objects(self.bucket, prefix=base, recursive=True)]
            except S3Error as e:
                if e.code == "NoSuchBucket":
                    return []
                raise

        # S3 prefixes are plain string prefixes: keep ``base`` itself (a key) and what lies below
        # ``base/`` (a folder), never a sibling such as ``base-old`` ("a/b" must not list "a/bc").
        names = self._call(self.key_uri(prefix), listing)
        inside = [n for n in names if not base or n == base or n.startswith(f"{base}/")]
        keys = [k for k in (n[strip:] for n in inside) if not _hidden(k)]
        # S3 keys are strings, not paths: another client can write "a/../b", which no call here may use
        unsafe = [k for k in keys if key_problem(k)]
        if unsafe:
            log.warning("%s: ignoring %d object(s) whose names are not safe keys, e.g. %r", self.key_uri(prefix),
                        len(unsafe), unsafe[0][:80])
        return sorted(k for k in keys if not key_problem(k))

    def delete_prefix(self, prefix=""):
        from minio.deleteobjects import DeleteObject

        names = [self._name(k) for k in self.list(prefix)]
        if not names:
            return

        def delete():
            errors = list(self.client.remove_objects(self.bucket, (DeleteObject(n) for n in names)))
            if errors:
                raise StoreError(f"could not delete {len(errors)} objects under {self.key_uri(prefix)}")

        self._call(self.key_uri(prefix), delete)

    def put_new(self, key, data):
        """A PUT with ``If-None-Match: *`` through a presigned URL (minio 7.2.20's put_object sends no such
        header: minio/helpers.py normalize_headers turns it into user metadata). S3 answers 412
        PreconditionFailed when the key exists (AWS S3 conditional writes, and MinIO
        RELEASE.2025-10-15T17-29-55Z cmd/object-handlers.go PutObjectHandler -> checkPreconditionsPUT,
        evaluated under the object's namespace lock in cmd/erasure-object.go putObject); 409
        ConditionalRequestConflict when a concurrent conditional write of the key is in flight (AWS)."""
        from datetime import timedelta

        from minio.error import S3Error, ServerError

        self._ensure_bucket()
        name = self._name(key)

        def put():
            url = self.client.presigned_put_object(self.bucket, name, expires=timedelta(minutes=10))
            connect, read, _, _ = _limits()
            resp = _http(connect, read).request("PUT", url, body=data, headers={"If-None-Match": "*"})
            if resp.status in (200, 201, 204):
                return True
            if resp.status in (409, 412):
                return False
            if resp.status >= 500:
                raise ServerError(f"HTTP {resp.status}", resp.status)
            code = re.search(rb"<Code>([^<]+)</Code>", resp.data or b"")
            raise S3Error(None, code.group(1).decode() if code else f"HTTP{resp.status}",
                          f"conditional write answered HTTP {resp.status}", name, "", "")

        return self._call(self.key_uri(key), put)

    def check_writable(self):
        self._ensure_bucket()
        key = f".jetlib-write-probe-{uuid.uuid4().hex[:8]}"
        self.put_bytes(key, b"")
        self._call(self.key_uri(key), lambda: self.client.remove_object(self.bucket, self._name(key)))
