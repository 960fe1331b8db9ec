"""The object store: the system of record every step reads from and writes to.

A store is named by a URI:

* a local folder (``./jetstore``, ``/data/jets`` or ``file:///data/jets``), the
  embedded default, for a laptop or a shared filesystem;
* ``s3://bucket/prefix``, any S3 API (MinIO in the cluster) through the ``minio``
  client (:mod:`jetlib.data.s3`). The endpoint and credentials come from the environment, never from
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
deleted. Writes are atomic (a reader sees the whole object or none of it), so "the
manifest is written last" is enough to make a dataset appear all at once. A missing bucket is created on first write.
Transient failures (connection errors, 5xx, ``SlowDown``) are retried with
exponential backoff; everything else becomes one :class:`StoreError` line that
names the store and never a credential.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from jetlib.data.keys import key_problem
from jetlib.errors import ConfigError, DataError, StoreError

log = logging.getLogger(__name__)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class NotFound(StoreError):
    """No object at the key (on either store): callers test for this type, never an error's text."""


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
    def get_bytes(self, key: str) -> bytes:
        """The object at ``key``; :class:`NotFound` when there is none."""

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
        """Copy an object to a local file, atomically; :class:`NotFound` when there is none."""
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
        except (FileNotFoundError, NotADirectoryError):  # a key below a file does not exist either
            raise NotFound(f"{self.key_uri(key)} does not exist") from None
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
            for folder in created:  # a concurrent writer's probe or objects may be in it now: then it stays
                with contextlib.suppress(OSError):
                    folder.rmdir()


def open_store(uri: str | os.PathLike) -> Store:
    """The store for ``uri``: ``s3://bucket/prefix`` or a local folder (``file://`` optional)."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        from jetlib.data.s3 import S3Store

        return S3Store(text)
    if "://" in text and not text.startswith("file://"):
        raise ConfigError(f"unsupported store URI {text!r}: use a local folder or s3://bucket/prefix")
    return LocalStore(text.removeprefix("file://"))
