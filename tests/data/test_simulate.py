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
    one = simulate(cfg, d / "one.h5", workers=1)
    two = simulate(cfg, d / "two.h5", workers=2)
    return d, one, two


@pytest.mark.slow  # the simulated fixture: ~20 s of CPU (Pythia)
def test_reproducible_whatever_the_worker_count(simulated):
    d, one, two = simulated
    with h5py.File(d / "one.h5") as a, h5py.File(d / "two.h5") as b:
        for key in ("X_jets", "y", "m0", "pt"):
            np.testing.assert_array_equal(a[key][...], b[key][...])
    assert one["events"] == two["events"] and two["workers"] == 2


@pytest.mark.slow
def test_physics_and_layout(simulated):
    d, summary, _ = simulated
    with h5py.File(d / "one.h5") as f:
        x, y, m0, pt = f["X_jets"][...], f["y"][...], f["m0"][...], f["pt"][...]
        assert f["X_jets"].chunks is not None and f["X_jets"].compression == "gzip"
    assert x.shape == (9, 125, 125, 3) and x.dtype == np.float32
    assert sorted(y.tolist()) == [0.0] * 4 + [1.0] * 5  # balanced; the odd jet is a quark
    assert ((pt >= 500) & (pt <= 550)).all() and (m0 > 0).all() and (m0 < pt).all()
    assert (x >= 0).all()
    sums = x.sum(axis=(1, 2))  # (N, 3) GeV per channel
    assert (sums > 0).all()
    # charged tracks and calorimeters each see a sizeable part of a ~525 GeV jet
    assert ((sums[:, 0] > 50) & (sums[:, 0] < 1000)).all()
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
    d, _, _ = simulated
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
