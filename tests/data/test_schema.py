"""Every kind of bad input named in the data issue: one clear line, exit 2, nothing in the store."""

import h5py
import numpy as np
import pytest

from jetlib.cli import main
from jetlib.data.schema import inspect_source, read_scalars
from tests.conftest import write_h5


def _rewrite(path, key, value):
    with h5py.File(path, "a") as f:
        del f[key]
        f[key] = value


def missing_file(p):
    return p.parent / "absent.h5", "absent.h5: no such file"


def not_hdf5(p):
    p.write_text("jet,y\n1,0\n")
    return p, "not an HDF5 file"


def truncated(p):
    write_h5(p, n=16)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    return p, "truncated or corrupt"


def missing_key(p):
    write_h5(p)
    with h5py.File(p, "a") as f:
        del f["m0"]
    return p, "key 'm0' is missing"


def misnamed_image_key(p):
    write_h5(p)
    with h5py.File(p, "a") as f:
        f.move("X_jets", "images")
    return p, "no image dataset: expected key 'X_jets'"


def misnamed_label_key(p):
    write_h5(p, layout="jet")
    with h5py.File(p, "a") as f:
        f.move("Y", "y")
    return p, "key 'Y' is missing"


def wrong_rank(p):
    write_h5(p)
    _rewrite(p, "X_jets", np.zeros((40, 125, 125), np.float32))
    return p, "expected 4 dimensions"


def wrong_image_size(p):
    write_h5(p, size=64)
    return p, "images are 64x64 pixels, expected 125x125"


def not_square(p):
    write_h5(p)
    _rewrite(p, "X_jets", np.zeros((40, 125, 100, 3), np.float32))
    return p, "expected square images"


def mismatched_lengths(p):
    write_h5(p)
    _rewrite(p, "pt", np.ones(39))
    return p, "'pt' has 39 entries but 'X_jets' has 40 jets"


def nan_pixel(p):
    write_h5(p, n=40)
    with h5py.File(p, "a") as f:
        f["X_jets"][33, 60, 61, 2] = np.nan
    return p, "'X_jets' has nan at jet 33 (channel 2, pixel 60,61)"


def inf_pixel(p):
    write_h5(p, n=40, axis="first")
    with h5py.File(p, "a") as f:
        f["X_jets"][5, 1, 3, 4] = np.inf
    return p, "'X_jets' has inf at jet 5 (channel 1, pixel 3,4)"


def nan_mass(p):
    write_h5(p)
    with h5py.File(p, "a") as f:
        f["m0"][7] = np.nan
    return p, "'m0' has nan at row 7"


def label_outside(p):
    write_h5(p)
    y = np.zeros(40)
    y[11] = 2
    _rewrite(p, "y", y)
    return p, "'y' has value 2.0 at row 11: labels must be 0 (gluon) or 1 (quark)"


def zero_jets(p):
    with h5py.File(p, "w") as f:
        f["X_jets"] = np.zeros((0, 125, 125, 3), np.float32)
    return p, "holds 0 jets"


def integer_images(p):
    with h5py.File(p, "w") as f:
        f["X_jets"] = np.zeros((4, 125, 125, 3), np.int32)
    return p, "dtype int32"


BAD = [missing_file, not_hdf5, truncated, missing_key, misnamed_image_key, misnamed_label_key, wrong_rank,
       wrong_image_size, not_square, mismatched_lengths, nan_pixel, inf_pixel, nan_mass, label_outside,
       zero_jets, integer_images]


@pytest.mark.parametrize("case", BAD, ids=lambda f: f.__name__)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    path, expected = case(tmp_path / "bad.h5")
    store = tmp_path / "store"
    rc = main(["ingest", str(path), "--store", str(store)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jetlib ingest: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (store / "datasets").exists() or not any((store / "datasets").rglob("*"))


def test_debug_flag_shows_the_traceback(tmp_path):
    path, _ = not_hdf5(tmp_path / "bad.h5")
    from jetlib.errors import DataError

    with pytest.raises(DataError):
        main(["ingest", str(path), "--store", str(tmp_path / "s"), "--debug"])


@pytest.mark.parametrize("layout,axis", [("X_jets", "last"), ("jet", "first"), ("jet", "last")])
def test_inspect_source_detects_layout_and_axis(tmp_path, layout, axis):
    p = tmp_path / "f.h5"
    write_h5(p, n=12, layout=layout, axis=axis, dtype="float16", chunks=False)
    info = inspect_source(p)
    assert (info.layout, info.channel_axis, info.n_jets, info.dtype) == (layout, axis, 12, "float16")
    assert info.channels == (3 if layout == "X_jets" else 8) and info.labelled
    assert info.chunks is None and info.compression is None


def test_images_only_file_is_unlabelled(tmp_path):
    p = tmp_path / "f.h5"
    write_h5(p, n=12, layout="jet", labelled=False)
    info = inspect_source(p)
    assert not info.labelled and read_scalars(info) == {}


def test_labels_as_n_by_1_and_integers_are_accepted(tmp_path):
    p = tmp_path / "f.h5"
    write_h5(p, n=10)
    _rewrite(p, "y", (np.arange(10) % 2).astype(np.int64).reshape(10, 1))
    s = read_scalars(inspect_source(p))
    assert s["y"].dtype == np.int8 and s["y"].tolist() == [0, 1] * 5
