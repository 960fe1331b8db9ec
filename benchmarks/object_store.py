"""The tests' S3 server: SeaweedFS (``tests/s3_server.py``) against the in-process moto server the tests used
before, each doing what the S3 tests do. Prints one JSON line.

For each server: ``ready_s``, from starting it to its first successful write and read; then ``work_s``
(wall), ``work_cpu_s`` (CPU of this process, where moto's request handling also runs) and
``server_cpu_s`` (SeaweedFS's own process, start-up included) for ``--tests``
rounds of what one S3 test does through jetlib's store: a store of its own (moto: a new bucket per test,
as the old fixture gave; SeaweedFS: a new prefix in one session bucket, as ``s3_env`` gives now), a
writability probe, ``--objects`` puts of 50 kB, a listing, every object read back, a conditional write
twice (the claim) and the prefix deleted. The baseline, moto, is measured in the same run; the two run
alternately ``--repeats`` times and the medians are reported.

    .venv/bin/python benchmarks/object_store.py                 # ~1 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import ROOT  # noqa: F401 (puts the repository on sys.path)

from jetlib.data.store import open_store
from tests.conftest import free_port
from tests.s3_server import SeaweedFS


def _ready(url: str, access: str, secret: str) -> None:
    """Return once a bucket can be made, written and read (retrying while the server starts)."""
    store_env(url, access, secret)
    deadline = time.monotonic() + 60
    while True:
        try:
            s = open_store(f"s3://jetlib-ready-{uuid.uuid4().hex[:8]}/x")
            s.put_bytes("k", b"ok")
            assert s.get_bytes("k") == b"ok"
            return
        except Exception:  # noqa: BLE001 (still starting)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def store_env(url: str, access: str, secret: str) -> None:
    os.environ.update({"JETLIB_S3_ENDPOINT": url, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret,
                       "JETLIB_S3_RETRIES": "40"})


def workload(uri_for_test, tests: int, objects: int) -> tuple[float, float]:
    payload = os.urandom(50_000)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(tests):
        s = open_store(uri_for_test())
        s.check_writable()
        for i in range(objects):
            s.put_bytes(f"d/{i:03d}.bin", payload)
        keys = s.list("d")
        assert len(keys) == objects and all(s.get_bytes(k) == payload for k in keys)
        assert s.put_new("c/.claim", b"1") and not s.put_new("c/.claim", b"2")
        s.delete_prefix("")
    return time.perf_counter() - wall, time.process_time() - cpu


def moto_round(tests: int, objects: int) -> dict:
    t0 = time.perf_counter()
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _ready(f"http://127.0.0.1:{port}", "moto-key", "moto-secret")
        ready = time.perf_counter() - t0
        wall, cpu = workload(lambda: f"s3://jetlib-test-{uuid.uuid4().hex[:12]}/run", tests, objects)
    finally:
        server.stop()
    return {"ready_s": ready, "work_s": wall, "work_cpu_s": cpu, "server_cpu_s": 0.0}  # moto's is in work_cpu_s


def seaweedfs_round(tests: int, objects: int) -> dict:
    t0 = time.perf_counter()
    bucket = f"jetlib-test-{uuid.uuid4().hex[:12]}"
    with SeaweedFS() as server:
        _ready(server.url, server.admin.access_key, server.admin.secret_key)
        ready = time.perf_counter() - t0
        wall, cpu = workload(lambda: f"s3://{bucket}/t-{uuid.uuid4().hex[:12]}/run", tests, objects)
        server_cpu = _cpu_s(server.proc.pid)
    return {"ready_s": ready, "work_s": wall, "work_cpu_s": cpu, "server_cpu_s": server_cpu}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; fields 14 and 15 of its stat line)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(name: str, tests: int, objects: int) -> dict:
    """One server's round in a fresh interpreter, as a test session starts: its imports count."""
    out = subprocess.run([sys.executable, __file__, "--one", name, "--tests", str(tests), "--objects", str(objects)],
                         capture_output=True, text=True, check=True, env={**os.environ, "JETLIB_PROGRESS": "0"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", type=int, default=30, help="S3 tests simulated per round")
    ap.add_argument("--objects", type=int, default=10, help="objects each test writes and reads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", choices=["moto", "seaweedfs"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        fn = moto_round if args.one == "moto" else seaweedfs_round
        print(json.dumps(fn(args.tests, args.objects)))
        return
    runs = {"moto": [], "seaweedfs": []}
    for _ in range(args.repeats):
        for name in runs:
            runs[name].append(one_round(name, args.tests, args.objects))
    med = {name: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]} for name, rs in runs.items()}
    total = {name: m["ready_s"] + m["work_s"] for name, m in med.items()}
    print(json.dumps({"benchmark": "object_store", "tests": args.tests, "objects": args.objects,
                      "repeats": args.repeats, "baseline": "moto", **med,
                      "speedup_total": round(total["moto"] / total["seaweedfs"], 2),
                      "load_avg_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
