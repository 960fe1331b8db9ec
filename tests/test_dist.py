"""jetlib.dist: helpers that are the identity on one process, and a bounded wait for a hung peer."""

import datetime
import json
import os
import time

import pytest
import torch
import torch.multiprocessing as mp

from jetlib import dist
from jetlib.errors import ConfigError
from tests.conftest import free_port


def test_one_process_is_the_identity(monkeypatch):
    assert dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}]
    x = torch.tensor([1.0, 2.0])
    assert torch.equal(dist.all_reduce_mean(x), x) and dist.gather(x) is x


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("JETLIB_DIST_TIMEOUT_S", raising=False)
    assert dist.timeout() == datetime.timedelta(seconds=1800)
    monkeypatch.setenv("JETLIB_DIST_TIMEOUT_S", "2.5")
    assert dist.timeout() == datetime.timedelta(seconds=2.5)
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv("JETLIB_DIST_TIMEOUT_S", bad)
        with pytest.raises(ConfigError, match="JETLIB_DIST_TIMEOUT_S must be a positive number of seconds"):
            dist.timeout()


def _worker(rank, port, folder):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), JETLIB_DIST_TIMEOUT_S="3")
    dist.setup(torch.device("cpu"))
    gathered = dist.all_gather_object({"rank": rank})
    release = os.path.join(folder, "release")
    if rank == 1:  # a hung peer: alive, but never joins another collective
        deadline = time.monotonic() + 120
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.1)
        os._exit(0)
    t0 = time.monotonic()
    try:
        dist.barrier()
        outcome = "returned"
    except Exception as e:  # gloo's timeout error
        outcome = type(e).__name__
    with open(os.path.join(folder, "rank0.json"), "w") as f:
        json.dump({"gathered": gathered, "outcome": outcome, "waited_s": time.monotonic() - t0}, f)
    open(release, "w").close()
    os._exit(0)  # the group is broken: skip its teardown


@pytest.mark.ddp
@pytest.mark.slow  # waits out a timeout: ~22 s
def test_a_hung_peer_ends_the_survivor_after_the_timeout(tmp_path):
    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    got = json.loads((tmp_path / "rank0.json").read_text())
    assert got["gathered"] == [{"rank": 0}, {"rank": 1}]  # the object gather works across ranks
    assert got["outcome"] != "returned"  # the barrier could not complete without rank 1...
    assert 2.5 <= got["waited_s"] < 60  # ...and failed after JETLIB_DIST_TIMEOUT_S, not the default 30 min
