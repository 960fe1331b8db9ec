"""Hostile inputs, one table: every case is a bad source file, a crafted store object or a broken machine,
run through ``jetlib`` as a user would, with the exit code, the one line on stderr and "nothing half-written"
checked. The reliability figures of docs/reliability.md count these cases (``len(CASES)``).

Behaviour of the real systems relied on, read at the pinned versions:

* h5py 3.16.0 ``h5py/_hl/dataset.py`` (``Dataset.external`` from ``get_external_count``; ``is_virtual`` is
  ``get_layout() == h5d.VIRTUAL``) and ``h5py/_hl/group.py`` (``Group.get(getlink=True)`` first tests
  ``name in self``, which follows the link: jetlib reads link types through ``f.id.links`` instead). HDF5 reads
  an external-storage dataset's bytes from the named file, and loads a plugin library for a filter it lacks.
* minio 7.2.20 ``minio/helpers.py`` ``check_object_name``: ``ValueError`` for ``.``/``..`` segments.
* The kernel's ``/dev/full``: every write fails with ``ENOSPC`` (errno 28), a real full disk for the spill.
* torch 2.14.1's CPU allocator: a huge ``nn.Conv2d`` raises ``RuntimeError`` "DefaultCPUAllocator: can't
  allocate memory".
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from jetlib import cli
from jetlib.data.store import sha256_bytes
from tests.conftest import write_h5

SIZE = 16  # image side: small and fast; ingest runs with --image-size any


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """A committed dataset (local store) that each case copies before tampering with it."""
    from jetlib.data.ingest import IngestConfig, ingest

    d = tmp_path_factory.mktemp("hostile")
    write_h5(d / "jets.h5", n=40, size=SIZE)
    uri = ingest(d / "jets.h5", str(d / "store"), cfg=IngestConfig(shard_rows=16, row_group_rows=8, image_size=None))
    return Path(uri)


@dataclass
class Ctx:
    tmp: Path
    committed: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def ds(self) -> Path:
        """A private copy of the committed dataset (made on first use)."""
        target = self.tmp / "store" / "datasets" / self.committed.name
        if not target.exists():
            shutil.copytree(self.committed, target)
        return target

    def manifest(self, edit: Callable[[dict], object]) -> str:
        path = self.ds / "manifest.json"
        m = json.loads(path.read_text())
        out = edit(m)
        path.write_text(json.dumps(m if out is None else out))
        return str(self.ds)

    def h5(self, mutate: Callable[[h5py.File, Path], None], name: str = "bad.h5", **kw) -> list[str]:
        path = self.tmp / name
        write_h5(path, n=40, size=SIZE, **kw)
        with h5py.File(path, "a") as f:
            mutate(f, self.tmp)
        return ["ingest", str(path), "--store", str(self.tmp / "out"), "--image-size", "any"]


def _replace(f: h5py.File, key: str, **create) -> None:
    del f[key]
    f.create_dataset(key, **create)


def _ext_storage(f, tmp):
    _replace(f, "X_jets", shape=(40, SIZE, SIZE, 3), dtype="f4",
             external=[("/proc/self/environ", 0, h5py.h5f.UNLIMITED)])


def _ext_link(f, tmp):
    with h5py.File(tmp / "elsewhere.h5", "w") as g:
        g["X_jets"] = np.ones((40, SIZE, SIZE, 3), np.float32)
    del f["X_jets"]
    f["X_jets"] = h5py.ExternalLink(str(tmp / "elsewhere.h5"), "/X_jets")


def _virtual(f, tmp):
    with h5py.File(tmp / "elsewhere.h5", "w") as g:
        g["X_jets"] = np.ones((40, SIZE, SIZE, 3), np.float32)
    layout = h5py.VirtualLayout(shape=(40, SIZE, SIZE, 3), dtype="f4")
    layout[:] = h5py.VirtualSource(str(tmp / "elsewhere.h5"), "X_jets", shape=(40, SIZE, SIZE, 3))
    del f["X_jets"]
    f.create_virtual_dataset("X_jets", layout)


def _soft_link(f, tmp):
    f.move("X_jets", "images")
    f["X_jets"] = h5py.SoftLink("/images")


def _scalar_external(f, tmp):
    (tmp / "labels.bin").write_bytes(np.ones(40, np.float32).tobytes())
    _replace(f, "y", shape=(40,), dtype="f4", external=[(str(tmp / "labels.bin"), 0, h5py.h5f.UNLIMITED)])


def _unknown_filter(f, tmp):
    data = f["X_jets"][...]
    _replace(f, "X_jets", data=data, chunks=(8, SIZE, SIZE, 3), compression=32015, allow_unknown_filter=True)


def _declared_not_stored(f, tmp):
    n = 100_000
    del f["X_jets"]
    ds = f.create_dataset("X_jets", shape=(n, SIZE, SIZE, 3), dtype="f4", chunks=(8, SIZE, SIZE, 3))
    ds[:40] = 1.0
    for key in ("y", "m0", "pt"):
        _replace(f, key, data=np.ones(n, np.float32) * (1 if key == "y" else 100))


def _never_written(f, tmp):
    _replace(f, "X_jets", shape=(40, SIZE, SIZE, 3), dtype="f4")  # contiguous, never written: all fill value


def _pixels(edit):
    def mutate(f, tmp):
        x = f["X_jets"][...]
        edit(x)
        f["X_jets"][...] = x
    return mutate


def _scalar(key, row, value):
    def mutate(f, tmp):
        v = f[key][...]
        v[row] = value
        f[key][...] = v
    return mutate


def _disk_full(ctx: Ctx) -> list[str]:
    """The spill goes to a file on /dev/full: the kernel answers ENOSPC to every write, as on a full disk."""
    from jetlib.data import ingest as ingest_mod

    real_init = ingest_mod._Buckets.__init__

    def init(self, tmp, budget):  # spill every block (a 1-byte budget), so the spill path is taken
        real_init(self, tmp, 1)

    def save(self, path):
        with open("/dev/full", "wb") as full:
            np.savez(full, code=self.code)

    ctx.monkeypatch.setattr(ingest_mod._Buckets, "__init__", init)
    ctx.monkeypatch.setattr(ingest_mod._Rows, "save", save)
    return ctx.h5(lambda f, tmp: None)


def _shard(ctx: Ctx, split="train", i=0) -> dict:
    return json.loads((ctx.ds / "manifest.json").read_text())["splits"][split]["shards"][i]


def _set_shard(**values):
    def edit(m):
        m["splits"]["train"]["shards"][0].update(values)
    return edit


def _outside_shard(ctx: Ctx) -> Path:
    """A copy of a real shard outside the dataset, so that a crafted key's sha256 matches."""
    victim = ctx.tmp / "outside" / "t0-00000.parquet"
    victim.parent.mkdir()
    victim.write_bytes((ctx.ds / _shard(ctx)["key"]).read_bytes())
    return victim


def _inflated(m):
    """Every count inflated consistently: only reading the shard shows it holds fewer jets."""
    shard = m["splits"]["train"]["shards"][0]
    extra = m["config"]["shard_rows"] - shard["rows"]
    shard["rows"] += extra
    m["splits"]["train"]["rows"] += extra
    m["source"]["n_jets"] += extra


def _tamper(ctx: Ctx) -> list[str]:
    path = ctx.ds / _shard(ctx, "test")["key"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return ["inspect", str(ctx.ds), "--verify"]


def _torn_manifest(ctx: Ctx) -> list[str]:
    (ctx.ds / "manifest.json").write_text('{"format": ')
    return ["inspect", str(ctx.ds)]


def _run_folder(ctx: Ctx, name: str, fmt: str, field: str, key: str, data: bytes) -> Path:
    folder = ctx.tmp / name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"format": fmt, field: {"key": key, "sha256": sha256_bytes(data)}}))
    return folder


def _encoder_climbs(ctx: Ctx) -> list[str]:
    victim = ctx.tmp / "victim" / "encoder.pt"
    victim.parent.mkdir()
    victim.write_bytes(b"not yours")
    init = _run_folder(ctx, "pre", "jetlib.pretrain/2", "encoder", "../victim/encoder.pt", victim.read_bytes())
    return ["finetune", "--data", str(ctx.ds), "--out", str(ctx.tmp / "ft"), "--task", "cls", "--mode", "finetune",
            "--init", str(init), "--preset", "tiny"]


def _model(ctx: Ctx, blob: dict, key: str = "model.pt") -> list[str]:
    import io

    buf = io.BytesIO()
    torch.save(blob, buf)
    folder = _run_folder(ctx, "model", "jetlib.model/2", "model", key, buf.getvalue())
    (folder / "model.pt").write_bytes(buf.getvalue())
    return ["evaluate", "--data", str(ctx.ds), "--model", str(folder), "--out", str(ctx.tmp / "results")]


def _pointer(ctx: Ctx) -> list[str]:
    """A pointer into another run's checkpoints: resuming would load it and later delete it."""
    victim = ctx.tmp / "victim" / "checkpoints" / "epoch-0000.pt"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"another run's checkpoint")
    ck = ctx.tmp / "run" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "latest.json").write_text(json.dumps({"epoch": 0, "key": "../../victim/checkpoints/epoch-0000.pt",
                                                "sha256": sha256_bytes(victim.read_bytes()), "bytes": 24}))
    return ["pretrain", "--data", str(ctx.ds), "--out", str(ctx.tmp / "run"), "--preset", "tiny"]


def _second_run(ctx: Ctx) -> list[str]:
    """Pretraining seed 1 into the --out that seed 0 holds (both used to exit 0, one silently lost)."""
    from dataclasses import asdict

    from jetlib.claim import claim
    from jetlib.data.store import open_store
    from jetlib.pretrain import make_config

    seed0 = make_config("tiny", seed=0)
    ds_id = json.loads((ctx.ds / "manifest.json").read_text())["id"]
    claim(open_store(str(ctx.tmp / "run")), "pretrain", {"config": asdict(seed0), "dataset": ds_id}, "seed 0")
    return ["pretrain", "--data", str(ctx.ds), "--out", str(ctx.tmp / "run"), "--preset", "tiny", "--seed", "1"]


def _stalled(ctx: Ctx) -> list[str]:
    from tests.data.test_hostile_store import _Silent

    server = _Silent()
    ctx.monkeypatch.setattr(Ctx, "server", server, raising=False)
    for name, value in (("JETLIB_S3_ENDPOINT", f"http://127.0.0.1:{server.port}"), ("AWS_ACCESS_KEY_ID", "k"),
                        ("AWS_SECRET_ACCESS_KEY", "s"), ("JETLIB_S3_READ_TIMEOUT", "0.2"), ("JETLIB_S3_RETRIES", "2")):
        ctx.monkeypatch.setenv(name, value)
    return ["inspect", "s3://jets/study/datasets/x"]


def _untouched(*paths):
    """A check that the files outside the output (a victim) are still there, unchanged."""
    def check(ctx: Ctx):
        for p in paths:
            assert (ctx.tmp / p).is_file(), p
    return check


@dataclass
class Case:
    name: str
    build: Callable[[Ctx], list[str]]
    code: int
    line: str
    allowed: tuple[str, ...] = ()  # files a refused run may leave (its own claim)
    check: Callable[[Ctx], None] | None = None


CASES = [
    # --- a source file from elsewhere (nothing outside the file is read) ---
    Case("hdf5 external storage of /proc/self/environ", lambda c: c.h5(_ext_storage), 2,
         "'X_jets' uses HDF5 external storage (its bytes live in '/proc/self/environ', outside the file): refused"),
    Case("hdf5 external link", lambda c: c.h5(_ext_link), 2, "'X_jets' is an external link to"),
    Case("hdf5 virtual dataset", lambda c: c.h5(_virtual), 2, "'X_jets' is a virtual dataset"),
    Case("hdf5 soft link", lambda c: c.h5(_soft_link), 2, "'X_jets' is a soft or user-defined link: refused"),
    Case("hdf5 label in external storage", lambda c: c.h5(_scalar_external), 2, "'y' uses HDF5 external storage"),
    Case("hdf5 filter plugin", lambda c: c.h5(_unknown_filter), 2, "needs HDF5 filter 32015, which is not built in"),
    # --- garbage in ---
    Case("declares 100,000 jets, stores 40", lambda c: c.h5(_declared_not_stored), 2,
         "'X_jets' declares 100,000 rows but stores only 5 of its 12,500 chunks (about 40 rows)"),
    Case("images never written", lambda c: c.h5(_never_written, chunks=False), 2,
         "'X_jets' declares 40 rows but stores 0 of its 122,880 bytes"),
    Case("a quarter of the jets empty", lambda c: c.h5(_pixels(lambda x: x.__setitem__(slice(0, 10), 0))), 2,
         "10 of 40 jets in 'X_jets' have an all-zero image (first: jet 0), more than 1%: refused"),
    Case("pixel above the ceiling", lambda c: c.h5(_pixels(lambda x: x.__setitem__((5, 1, 2, 0), 2e4))), 2,
         "'X_jets' has 20000 at jet 5 (channel 0, pixel 1,2): above the 14,000 GeV ceiling"),
    Case("negative pixel", lambda c: c.h5(_pixels(lambda x: x.__setitem__((7, 3, 3, 2), -1.5))), 2,
         "'X_jets' has -1.5 at jet 7 (channel 2, pixel 3,3): negative"),
    Case("negative mass", lambda c: c.h5(_scalar("m0", 3, -5.0)), 2, "'m0' has -5.0 GeV at row 3: not physical"),
    Case("zero pT", lambda c: c.h5(_scalar("pt", 9, 0.0)), 2, "'pt' has 0.0 GeV at row 9: not physical (need 0 < pT"),
    # --- a broken machine ---
    Case("spill disk full", _disk_full, 5, "no space left for the ingest's spill files in"),
    # a width no network of the study needs is refused by its schema, before anything is allocated; a
    # model within the bounds that the machine cannot hold ends in exit 5 (tests/test_red_team.py)
    Case("out of memory building a model",
         lambda c: ["pretrain", "--data", str(c.ds), "--out", str(c.tmp / "run"), "--preset", "tiny",
                    "--set", "model.stem_width=400000", "--set", "model.widths=400000,4,8,8,8,8,16"], 2,
         "model.stem_width: must be less than or equal to 8192, got '400000'"),
    Case("stalled S3 endpoint", _stalled, 3, "no answer within 0.2 s (read timeout) (after 2 attempts)"),
    Case("s3 URI with '..'", lambda c: ["inspect", "s3://jets/study/../other/datasets/x"], 2,
         "a '.' or '..' segment in an s3:// URI is not allowed"),
    Case("s3 --out with '.'", lambda c: ["finetune", "--data", str(c.ds), "--out", "s3://jets/./ft", "--task", "cls",
                                         "--mode", "scratch", "--preset", "tiny"], 2,
         "segment in an s3:// URI is not allowed"),
    # --- a writer of the bucket: manifests ---
    Case("shard key absolute", lambda c: ["inspect", c.manifest(_set_shard(key=str(_outside_shard(c))))], 2,
         "is absolute: refused"),
    Case("shard key climbs", lambda c: ["inspect", c.manifest(_set_shard(key="train/../../outside/t0-00000.parquet"))],
         2, "climbs out with '..'"),
    Case("shard key in another split", lambda c: ["inspect", c.manifest(_set_shard(key="val/t0-00000.parquet"))], 2,
         "is not in train/: refused"),
    Case("sha256 that is a path", lambda c: ["inspect", c.manifest(_set_shard(sha256="../../../home/x"))], 2,
         "splits.train.shards[0].sha256 is str '../../../home/x', expected 64 lowercase hex digits"),
    Case("manifest is a list", lambda c: ["inspect", c.manifest(lambda m: [m])], 2,
         "has format no format (it is a JSON list)"),
    Case("manifest without splits", lambda c: ["inspect", c.manifest(lambda m: m.pop("splits") and None)], 2,
         "splits is missing"),
    Case("row_group_rows 0", lambda c: ["inspect", c.manifest(lambda m: m["config"].update(row_group_rows=0))], 2,
         "config.row_group_rows is 0, expected 1..16"),
    Case("split rows inflated", lambda c: ["inspect", c.manifest(lambda m: m["splits"]["train"].update(rows=10**7))],
         2, "splits.train.rows is 10,000,000 but its shards hold"),
    Case("every count inflated", lambda c: ["inspect", c.manifest(_inflated), "--verify"], 2,
         "the manifest says 16 in 2"),
    Case("shard tampered", _tamper, 2, "failed verification; first: "),
    Case("manifest not JSON", _torn_manifest, 2, "manifest.json is not valid JSON"),
    # --- a writer of the bucket: run.json, checkpoint pointers, model files ---
    Case("run.json encoder key climbs", _encoder_climbs, 2, "key '../victim/encoder.pt' climbs out with '..'",
         check=_untouched("victim/encoder.pt")),
    Case("checkpoint pointer into another run", _pointer, 2,
         "latest.json: key '../../victim/checkpoints/epoch-0000.pt' climbs out",
         allowed=("run/.jetlib-claim.json",), check=_untouched("victim/checkpoints/epoch-0000.pt")),
    Case("model mode names a path", lambda c: _model(c, {"arch": "resnet", "task": "cls", "mode": "../../../escape",
                                                         "label_fraction": 0.1, "seed": 0}), 2,
         "run.json arch: is missing"),  # run.json passes its schema before model.pt is used
    Case("model key absolute", lambda c: _model(c, {"arch": "vgg"}, key="/etc/passwd"), 2, "is absolute"),
    Case("model arch unknown", lambda c: _model(c, {"arch": "os.system"}), 2, "run.json arch: is missing"),
    # --- two runs, one --out ---
    Case("second pretraining run into a taken --out", _second_run, 2,
         "holds a pretrain run (seed 0) with different settings seed"),
]


def _snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_refused_with_one_line(case, committed, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JETLIB_TMPDIR", str(tmp_path / "spill"))
    monkeypatch.setenv("JETLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("JETLIB_S3_ENDPOINT", raising=False)
    (tmp_path / "spill").mkdir()
    ctx = Ctx(tmp_path, committed, monkeypatch)
    argv = case.build(ctx)
    before = _snapshot(tmp_path)
    try:
        code = cli.main(argv)
    finally:
        server = getattr(Ctx, "server", None)
        if server is not None:
            server.close()
    err = capsys.readouterr().err
    assert code == case.code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert case.line in err, err
    assert _snapshot(tmp_path) - before <= set(case.allowed), "something was half-written"
    assert _snapshot(tmp_path) >= before - {"store"}  # nothing deleted
    assert list((tmp_path / "spill").iterdir()) == []  # no spill folder left behind
    if case.check:
        case.check(ctx)


def test_the_table_is_what_the_reliability_page_counts():
    readme = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text()
    assert f"{len(CASES)} hostile inputs" in readme
