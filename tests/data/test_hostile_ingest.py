"""Ingest under kills and with doubtful data: spill folders never outlive their ingest, and what is kept is recorded.

``kill -9`` cannot run cleanup code, so the next ingest on the same machine removes a spill folder whose
owner process is gone (``os.kill(pid, 0)`` raising ``ProcessLookupError``, POSIX kill(2) with signal 0).
SIGTERM (a pod being stopped) unwinds through the cleanup instead.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from jetlib.data.ingest import OWNER, SPILL_PREFIX, IngestConfig, ingest, sweep_spills
from tests.conftest import write_h5


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _spill(root, name, owner):
    folder = root / f"{SPILL_PREFIX}{name}"
    (folder / "123").mkdir(parents=True)
    (folder / "123" / "0.npz").write_bytes(b"spilled rows")
    if owner is not None:
        (folder / OWNER).write_text(json.dumps(owner))
    return folder


def test_only_spill_folders_of_dead_ingests_on_this_host_are_swept(tmp_path):
    host = socket.gethostname()
    dead = _spill(tmp_path, "dead", {"host": host, "pid": _dead_pid()})
    alive = _spill(tmp_path, "alive", {"host": host, "pid": os.getppid()})
    other = _spill(tmp_path, "other", {"host": host + "-elsewhere", "pid": _dead_pid()})
    unknown = _spill(tmp_path, "unknown", None)
    assert sweep_spills(str(tmp_path)) == [dead]
    assert not dead.exists() and alive.exists() and other.exists() and unknown.exists()


def _ingest_cmd(src, store, tmp):
    return [sys.executable, "-m", "jetlib", "ingest", str(src), "--store", str(store), "--memory-mb", "1",
            "--shard-rows", "64", "--row-group-rows", "32"]


def _kill_during_spill(src, store, spill, sig) -> tuple[int, str]:
    """Start an ingest, wait for its first spilled rows, send ``sig``; returns (exit status, stderr)."""
    env = {**os.environ, "JETLIB_TMPDIR": str(spill), "JETLIB_PROGRESS": "0"}
    with open(spill.parent / "stderr.txt", "w+") as err:
        proc = subprocess.Popen(_ingest_cmd(src, store, spill), env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(spill.glob(f"{SPILL_PREFIX}*/*/*.npz")):
                proc.send_signal(sig)
                break
            time.sleep(0.01)
        status = proc.wait(60)
        err.seek(0)
        return status, err.read()[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_killed_ingest_leaves_no_spill_folder_and_the_rerun_is_identical(tmp_path, sig):
    src = tmp_path / "jets.h5"
    write_h5(src, n=1200, chunks=False, compression=None)
    spill = tmp_path / "spill"
    spill.mkdir()
    expected = -signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM
    for _attempt in range(3):  # a signal that lands after the spill phase (0, or -15 once the handler is gone)
        status, stderr = _kill_during_spill(src, tmp_path / "store", spill, sig)  # is timing, not behaviour
        if status == expected or status not in (0, -signal.SIGTERM):
            break
        shutil.rmtree(tmp_path / "store", ignore_errors=True)
    assert status == expected, f"exit status {status}, stderr: {stderr}"
    if sig == signal.SIGKILL:
        assert len(list(spill.iterdir())) == 1  # nothing could clean up: the folder is still there
    else:
        assert list(spill.iterdir()) == []  # SIGTERM unwound through the cleanup
    env = {**os.environ, "JETLIB_TMPDIR": str(spill), "JETLIB_PROGRESS": "0"}
    again = subprocess.run(_ingest_cmd(src, tmp_path / "store", spill), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert list(spill.iterdir()) == []  # the killed run's folder was swept, the re-run's removed
    straight = ingest(src, str(tmp_path / "straight"), cfg=IngestConfig(shard_rows=64, row_group_rows=32))
    a = json.loads((tmp_path / "store" / "datasets" / os.path.basename(straight) / "manifest.json").read_text())
    b = json.loads((tmp_path / "straight" / "datasets" / os.path.basename(straight) / "manifest.json").read_text())
    assert a["splits"] == b["splits"]  # every shard key, row count and sha256: bit-identical


def _no_nan(text):
    def refuse(name):
        raise AssertionError(f"{name} in JSON")
    return json.loads(text, parse_constant=refuse)


def test_a_few_empty_jets_are_kept_warned_about_and_recorded(tmp_path, caplog):
    src = tmp_path / "jets.h5"
    write_h5(src, n=200, size=16)
    import h5py

    with h5py.File(src, "a") as f:
        x = f["X_jets"][...]
        x[17] = 0  # one jet of 200: 0.5%, under the 1% ceiling
        f["X_jets"][...] = x
    uri = ingest(src, str(tmp_path / "store"), cfg=IngestConfig(image_size=None))
    m = _no_nan((tmp_path / "store" / "datasets" / os.path.basename(uri) / "manifest.json").read_text())
    assert m["quality"] == {"empty_jets": 1, "negative_pixels": 0, "pixel_max": 14000.0, "max_empty_fraction": 0.01}
    assert "1 of 200 jets have an all-zero image (first: jet 17)" in caplog.text


def test_negative_pixels_of_the_8_channel_layout_are_kept_and_counted(tmp_path, caplog):
    """Its channels include signed track impact parameters: a negative value is not refused there."""
    src = tmp_path / "jets8.h5"
    write_h5(src, n=40, layout="jet", size=16)
    import h5py

    with h5py.File(src, "a") as f:
        x = f["jet"][...]
        x[3, 4, 5, 1] = -0.25
        x[9, 1, 1, 2] = -3.0
        f["jet"][...] = x
    uri = ingest(src, str(tmp_path / "store"), cfg=IngestConfig(image_size=None))
    m = json.loads((tmp_path / "store" / "datasets" / os.path.basename(uri) / "manifest.json").read_text())
    assert m["quality"]["negative_pixels"] == 2 and m["quality"]["empty_jets"] == 0
    assert "2 negative pixels in 'jet'" in caplog.text
