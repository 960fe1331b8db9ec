import datetime as dt
import importlib.metadata
import json

from jetlib import __version__, provenance
from tests.conftest import run_cli


def test_provenance_records_code_packages_and_device(monkeypatch):
    monkeypatch.setenv("JETLIB_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    provenance.git_commit.cache_clear()
    try:
        p = provenance.provenance(device="cpu")
    finally:
        provenance.git_commit.cache_clear()
    assert p["jetlib"] == __version__ and p["device"] == "cpu"
    assert p["git_commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert p["packages"]["torch"] == importlib.metadata.version("torch")
    assert p["packages"]["numpy"] == importlib.metadata.version("numpy")
    created = dt.datetime.fromisoformat(p["created"])
    assert created.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60
    json.dumps(p)  # plain data: goes into run.json as is


def test_git_commit_without_a_checkout_is_none(monkeypatch, tmp_path):
    monkeypatch.delenv("JETLIB_GIT_COMMIT", raising=False)
    monkeypatch.setattr(provenance, "__file__", str(tmp_path / "jetlib" / "provenance.py"))
    provenance.git_commit.cache_clear()
    try:
        assert provenance.git_commit() is None
    finally:
        provenance.git_commit.cache_clear()


def test_version_prints_version_and_commit():
    r = run_cli("--version", env={"JETLIB_GIT_COMMIT": "feedbeef" * 5})
    assert r.returncode == 0
    assert r.stdout.strip() == f"jetlib {__version__} (git {'feedbeef' * 5})"
