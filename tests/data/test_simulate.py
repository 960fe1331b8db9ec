"""Pythia + FastJet simulation: physics sanity, reproducibility for any worker count, ingestability."""

import h5py
import numpy as np
import pytest

from jetlib.data.ingest import ingest
from jetlib.data.manifest import open_dataset
from jetlib.data.simulate import SimConfig, plan_tasks, simulate


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    cfg = SimConfig(n_jets=9, seed=11, chunk_jets=2)
    one = simulate(cfg, d / "one.h5", workers=1, cache=False)  # simulated, not cached
    two = simulate(cfg, d / "two.h5", workers=2)  # simulated again, and kept in the session's cache
    three = simulate(cfg, d / "three.h5", workers=2)  # the same settings: from the cache
    return d, one, two, three


@pytest.mark.slow  # the simulated fixture: ~20 s of CPU (Pythia)
def test_reproducible_whatever_the_worker_count(simulated):
    d, one, two, _ = simulated
    with h5py.File(d / "one.h5") as a, h5py.File(d / "two.h5") as b:
        for key in ("X_jets", "y", "m0", "pt"):
            np.testing.assert_array_equal(a[key][...], b[key][...])
    assert one["events"] == two["events"] and two["workers"] == 2
    assert not one["cached"] and not two["cached"]


@pytest.mark.slow  # the simulated fixture
def test_the_same_settings_again_come_from_the_cache_byte_for_byte(simulated):
    d, _, two, three = simulated
    assert three["cached"] and three["events"] == two["events"]
    assert (d / "three.h5").read_bytes() == (d / "two.h5").read_bytes()
    assert not list(d.glob("*.partial"))


@pytest.mark.slow  # three small simulations: ~5 s of CPU (Pythia)
def test_a_changed_setting_or_a_damaged_entry_simulates_anew(tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.setenv("JETLIB_CACHE", str(tmp_path / "cache"))
    cfg = SimConfig(n_jets=2, seed=5, chunk_jets=1)
    assert not simulate(cfg, tmp_path / "a.h5", workers=1)["cached"]
    assert not simulate(replace(cfg, seed=6), tmp_path / "b.h5", workers=1)["cached"]  # another key
    entries = sorted((tmp_path / "cache" / "simulated").glob("*.h5"))
    assert len(entries) == 2 and not list((tmp_path / "cache" / "simulated").glob(".*"))  # no temporaries left
    for e in entries:  # damaged: the sha256 in its record no longer matches
        e.write_bytes(e.read_bytes()[:-1] + b"x")
    again = simulate(cfg, tmp_path / "c.h5", workers=1)
    assert not again["cached"]
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "c.h5") as c:
        np.testing.assert_array_equal(a["X_jets"][...], c["X_jets"][...])
    assert simulate(cfg, tmp_path / "d.h5", workers=1)["cached"]  # the damaged entry was replaced


def test_a_cache_path_that_is_not_a_folder_is_refused(tmp_path, monkeypatch):
    from jetlib.errors import ConfigError

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("JETLIB_CACHE", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="JETLIB_CACHE=.*file is not a folder"):
        simulate(SimConfig(n_jets=2), tmp_path / "x.h5", workers=1)
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow  # one small simulation task: ~2 s of CPU
def test_a_task_reports_partonic_pt_and_constituents_of_its_jets():
    """What benchmarks/simulation.py tests the pT window with: every generated event's partonic pT
    (inside the generated window), the kept jets' own, and their constituent counts."""
    from jetlib.data.simulate import QUARK, Task, run_task

    cfg = SimConfig(n_jets=2, seed=5, chunk_jets=2)
    got = run_task(cfg, Task(QUARK, 0, 2))
    lo, hi = cfg.pthat_window[0] * cfg.pt_min, cfg.pthat_window[1] * cfg.pt_max
    assert len(got["pthat_events"]) == got["events"] and len(got["pthat"]) == len(got["n_const"]) == 2
    assert np.all((got["pthat_events"] >= lo) & (got["pthat_events"] <= hi))
    assert set(np.round(got["pthat"], 6)) <= set(np.round(got["pthat_events"], 6))
    assert np.all(got["n_const"] >= 2) and np.all(got["n_const"] < 500)


@pytest.mark.slow
def test_physics_and_layout(simulated):
    d, summary, _, _ = simulated
    with h5py.File(d / "one.h5") as f:
        x, y, m0, pt = f["X_jets"][...], f["y"][...], f["m0"][...], f["pt"][...]
        assert f["X_jets"].chunks is not None and f["X_jets"].compression == "gzip"
    assert x.shape == (9, 125, 125, 3) and x.dtype == np.float32
    assert sorted(y.tolist()) == [0.0] * 4 + [1.0] * 5  # balanced; the odd jet is a quark
    assert ((pt >= 500) & (pt <= 550)).all() and (m0 > 0).all() and (m0 < pt).all()
    assert (x >= 0).all()
    sums = x.sum(axis=(1, 2))  # (N, 3) GeV per channel
    assert (sums > 0).all()
    # charged tracks and calorimeters each see a sizeable part of a ~525 GeV jet: typically, since a jet
    # whose energy is mostly neutral (a few percent of jets; one of these nine carries 34 GeV in tracks) is
    # physics, not a fault
    assert (sums[:, 0] < 1000).all() and np.median(sums[:, 0]) > 100
    assert ((sums[:, 1] + sums[:, 2] > 200) & (sums[:, 1] + sums[:, 2] < 1500)).all()
    # the jet core sits at the image centre
    centre = x[:, 52:73, 52:73].sum(axis=(1, 2, 3)) / x.sum(axis=(1, 2, 3))
    assert (centre > 0.5).all()
    # HCAL is coarse: constant over each 5x5 tower
    towers = x[..., 2].reshape(9, 25, 5, 25, 5)
    assert np.allclose(towers, towers[:, :, :1, :, :1], rtol=1e-5, atol=1e-6)
    assert summary["share"]["pythia"] > 0.5  # imaging and clustering cost little next to Pythia
    assert 0 < summary["acceptance"] < 1


@pytest.mark.slow
def test_simulated_file_ingests(simulated, tmp_path):
    d, _, _, _ = simulated
    ds = open_dataset(ingest(d / "one.h5", str(tmp_path / "s")))
    assert ds.labelled and ds.manifest["source"]["layout"] == "X_jets"
    assert ds.manifest["image"]["channel_names"] == ["Tracks", "ECAL", "HCAL"]


def test_task_plan_pairs_classes_and_covers_every_jet():
    pairs = plan_tasks(SimConfig(n_jets=9, chunk_jets=2))
    assert [[(t.label, t.n_jets) for t in p] for p in pairs] == [
        [(1, 2), (0, 2)], [(1, 2), (0, 2)], [(1, 1)]]


def test_bad_settings():
    from jetlib.errors import ConfigError

    with pytest.raises(ConfigError):
        SimConfig(n_jets=1)
    with pytest.raises(ConfigError):
        SimConfig(pt_min=600, pt_max=550)
