"""The object store: the system of record every step reads from and writes to.

A store is named by a URI:

* a local folder (``./jetstore``, ``/data/jets`` or ``file:///data/jets``), the
  embedded default, for a laptop or a shared filesystem;
* ``s3://bucket/prefix``, any S3 API (MinIO in the cluster) through the ``minio``
  client. The endpoint and credentials come from the environment, never from
  code or flags, so that a Kubernetes Secret can fill them in:

  ``JETLIB_S3_ENDPOINT``    e.g. ``http://minio.kubeflow:9000``; the scheme decides TLS
  ``AWS_ACCESS_KEY_ID``     access key
  ``AWS_SECRET_ACCESS_KEY`` secret key
  ``AWS_SESSION_TOKEN``     optional
  ``AWS_REGION``            optional (default ``us-east-1``)
  ``JETLIB_S3_RETRIES``     attempts on transient errors (default 5)
  ``JETLIB_S3_CONNECT_TIMEOUT`` seconds to open a connection (default 10)
  ``JETLIB_S3_READ_TIMEOUT``    seconds without a byte from the server before an attempt fails (default 60)
  ``JETLIB_S3_DEADLINE``        seconds after which no new attempt starts (default 300): a stalled
                                endpoint fails within about DEADLINE + READ_TIMEOUT, naming itself

A malformed URI (an unknown scheme, an invalid bucket name) is bad input
(:class:`ConfigError`, exit 2); a store that cannot be reached or refuses access is a
:class:`StoreError` (exit 3).

Keys are ``/``-separated paths below the URI, checked by :func:`~jetlib.data.keys.check_key` on
every call of both stores: a key that is absolute, climbs with ``..`` or (locally) reaches outside
the root through a symlink is refused (:class:`DataError`) before anything is read, written or
deleted. Writes are atomic (a reader sees
the whole object or none of it), so "the manifest is written last" is enough to
make a dataset appear all at once. A missing bucket is created on first write.
Transient failures (connection errors, 5xx, ``SlowDown``) are retried with
exponential backoff; everything else becomes one :class:`StoreError` line that
names the store and never a credential.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from jetlib.data.keys import key_problem
from jetlib.errors import ConfigError, DataError, StoreError

log = logging.getLogger(__name__)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, block: int = 8 << 20, bar=None) -> str:
    """sha256 of a file read in blocks (bounded memory); ``bar`` is advanced by bytes read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return h.hexdigest()


class Store(ABC):
    """A flat namespace of immutable objects under one URI."""

    uri: str

    @abstractmethod
    def child(self, prefix: str) -> Store:
        """The store rooted at ``prefix`` below this one."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        """Write ``data`` atomically; ``sha256`` (if given) is recorded for :meth:`stored_sha256`."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def stored_sha256(self, key: str) -> str | None:
        """sha256 of the object at ``key``, or None if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys at or below ``prefix``, recursively, sorted, relative to this store.

        ``prefix`` is a path: ``"a/b"`` lists the key ``a/b`` itself and everything under
        ``a/b/``, never ``a/bc``; names starting with ``.`` (temporary files) are left out.
        """

    @abstractmethod
    def delete_prefix(self, prefix: str = "") -> None:
        """Delete what :meth:`list` lists for ``prefix``: one key, or everything below a folder."""

    @abstractmethod
    def check_writable(self) -> None:
        """Fail fast with a :class:`StoreError` if objects cannot be written here."""

    @abstractmethod
    def put_new(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if nothing is there: True if this call created it, False if it existed.

        Atomic against a concurrent ``put_new`` of the same key (O_EXCL locally, a conditional
        ``If-None-Match: *`` PUT on S3): exactly one of two racing callers gets True."""

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        """Upload a local file to ``key`` (atomically, with its sha256 recorded)."""
        data = Path(path).read_bytes()
        self.put_bytes(key, data, sha256=sha256_bytes(data))

    def get_file(self, key: str, path: str | os.PathLike) -> None:
        """Copy an object to a local file, atomically."""
        atomic_write(Path(path), self.get_bytes(key))

    def key_uri(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}" if key else self.uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def _checked(key: str, uri: str) -> str:
    """``key`` if it is a safe relative key below the store ``uri`` (``""`` is the store itself)."""
    problem = key and key_problem(key)
    if problem:
        raise DataError(f"{uri}: key {key[:80]!r} {problem}: refused (keys stay inside their store)")
    return key


def _hidden(key: str) -> bool:
    """Temporary and probe objects (a name starting with ``.``) are not listed by either store."""
    return key.rsplit("/", 1)[-1].startswith(".")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class LocalStore(Store):
    """A folder on a local or shared filesystem."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = self.root / _checked(key, self.uri) if key else self.root
        # A symlink inside a shared folder must not lead a read or a delete outside it.
        real, root = path.resolve(), self.root.resolve()
        if real != root and not real.is_relative_to(root):
            raise DataError(f"{self.key_uri(key)} leads outside the store (a symlink to {real}): refused")
        return path

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self._path(prefix.strip("/")))

    def put_bytes(self, key, data, *, sha256=None):
        try:
            atomic_write(self._path(key), data)
        except OSError as e:
            raise StoreError(f"cannot write {self.key_uri(key)}: {e.strerror or e}") from e

    def get_bytes(self, key):
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.key_uri(key)} does not exist") from None
        except OSError as e:
            raise StoreError(f"cannot read {self.key_uri(key)}: {e.strerror or e}") from e

    def exists(self, key):
        return self._path(key).is_file()

    def stored_sha256(self, key):
        path = self._path(key)
        return sha256_file(path) if path.is_file() else None

    def list(self, prefix=""):
        base = self._path(prefix.rstrip("/"))
        if base.is_file():  # a key is its own one-element listing, as on S3
            return [] if base.name.startswith(".") else [base.relative_to(self.root).as_posix()]
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not _hidden(k))

    def delete_prefix(self, prefix=""):
        target = self._path(prefix.rstrip("/"))
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    def put_new(self, key, data):
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            raise StoreError(f"cannot write {self.key_uri(key)}: {e.strerror or e}") from e
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            path.unlink(missing_ok=True)  # a half-written claim would block every later run
            raise StoreError(f"cannot write {self.key_uri(key)}: {e.strerror or e}") from e
        return True

    def check_writable(self):
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"store {self.uri} is a file, not a folder")
        created = [p for p in (self.root, *self.root.parents) if not p.exists()]
        probe = self.root / f".jetlib-write-probe-{uuid.uuid4().hex[:8]}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StoreError(f"store {self.uri} is not writable: {e.strerror or e}") from e
        finally:  # a probe leaves nothing behind, not even empty folders
            for folder in created:
                if folder.is_dir():
                    folder.rmdir()


# --- S3 / MinIO -------------------------------------------------------------------------

# Error codes an S3 server returns for conditions that pass on their own.
_TRANSIENT_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "Throttling"}
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
            self._call(f"creating bucket {self.bucket}", lambda: self.client.make_bucket(self.bucket))
        self._bucket_checked = True

    def put_bytes(self, key, data, *, sha256=None):
        self._ensure_bucket()
        meta = {"sha256": sha256 or sha256_bytes(data)}
        self._call(self.key_uri(key), lambda: self.client.put_object(
            self.bucket, self._name(key), io.BytesIO(data), len(data), metadata=meta))

    def get_bytes(self, key):

        def fetch():
            resp = self.client.get_object(self.bucket, self._name(key))
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        try:
            return self._call(self.key_uri(key), fetch)
        except StoreError as e:
            if "NoSuchKey" in str(e) or "NoSuchBucket" in str(e):
                raise StoreError(f"{self.key_uri(key)} does not exist") from None
            raise

    def _stat(self, key):
        from minio.error import S3Error

        def stat():
            try:
                return self.client.stat_object(self.bucket, self._name(key))
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"):
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
        # ``base/`` (a folder), never a sibling such as ``base-old`` (issue 11: "a/b" must not list "a/bc").
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


def open_store(uri: str | os.PathLike) -> Store:
    """The store for ``uri``: ``s3://bucket/prefix`` or a local folder (``file://`` optional)."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        return S3Store(text)
    if "://" in text and not text.startswith("file://"):
        raise ConfigError(f"unsupported store URI {text!r}: use a local folder or s3://bucket/prefix")
    return LocalStore(text.removeprefix("file://"))
