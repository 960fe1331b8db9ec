import numpy as np
import pytest

from jetlib.data.shards import SparseRows, decode, encode, parquet_file
from tests.conftest import jet_images


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_sparse_round_trip_is_exact(dtype):
    x = jet_images(6, 3, 17, seed=1, dtype=dtype)
    x[2] = 0  # an empty image
    s = SparseRows.from_dense(x)
    assert s.val.dtype == (np.float64 if dtype == "float64" else np.float32)
    assert s.counts[2] == 0 and s.offsets[-1] == np.count_nonzero(x)
    back = s.to_dense((3, 17, 17))
    np.testing.assert_array_equal(back, x.astype(back.dtype))
    assert back.astype(dtype).tobytes() == x.tobytes()


def test_indices_are_flat_channel_first_and_ascending():
    x = np.zeros((1, 2, 3, 4), np.float32)
    x[0, 1, 2, 3] = 5.0  # flat index 1*12 + 2*4 + 3 = 23
    x[0, 0, 0, 1] = 7.0
    s = SparseRows.from_dense(x)
    assert s.idx.tolist() == [1, 23] and s.val.tolist() == [7.0, 5.0]


def test_take_and_concat_match_dense_indexing():
    x = jet_images(9, 2, 11, seed=2)
    s = SparseRows.from_dense(x)
    rows = np.array([8, 0, 3, 3, 5])
    np.testing.assert_array_equal(s.take(rows).to_dense((2, 11, 11)), x[rows])
    both = SparseRows.concat([s.take(np.arange(4)), s.take(np.arange(4, 9))])
    np.testing.assert_array_equal(both.to_dense((2, 11, 11)), x)


def test_encode_decode_round_trip_with_row_groups():
    x = jet_images(10, 3, 125, seed=3)
    s = SparseRows.from_dense(x)
    jet = np.arange(100, 110)
    scalars = {"y": np.arange(10) % 2, "m0": np.linspace(1, 2, 10), "pt": np.linspace(500, 550, 10)}
    data = encode(jet, s, scalars, row_group_rows=4)
    pf = parquet_file(data)
    assert pf.metadata.num_row_groups == 3 and pf.metadata.num_rows == 10
    got_jet, got, got_scalars = decode(pf.read())
    np.testing.assert_array_equal(got_jet, jet)
    np.testing.assert_array_equal(got.to_dense((3, 125, 125)), x)
    for k, v in scalars.items():
        np.testing.assert_array_equal(got_scalars[k], v)
    # one row group alone decodes to its own rows
    g_jet, g, _ = decode(pf.read_row_group(1))
    np.testing.assert_array_equal(g_jet, jet[4:8])
    np.testing.assert_array_equal(g.to_dense((3, 125, 125)), x[4:8])


def test_encoding_is_deterministic_so_resume_can_compare_hashes():
    x = jet_images(5, 3, 125, seed=4)
    s = SparseRows.from_dense(x)
    assert encode(np.arange(5), s, {}) == encode(np.arange(5), s, {})
