import numpy as np
import pytest
import torch

from jetlib.data.ingest import IngestConfig, ingest
from jetlib.data.loader import JetLoader
from jetlib.data.manifest import open_dataset
from jetlib.errors import ConfigError, DataError


@pytest.fixture
def dataset(make_h5, tmp_path):
    path, src = make_h5(n=120)
    uri = ingest(path, str(tmp_path / "s"), cfg=IngestConfig(shard_rows=16, row_group_rows=4))
    return open_dataset(uri), src


def jets(loader):
    return [b.jet.tolist() for b in loader]


def test_shuffle_is_a_function_of_seed_and_epoch(dataset):
    ds, _ = dataset
    a, b = JetLoader(ds, batch_size=8, seed=1), JetLoader(ds, batch_size=8, seed=1)
    assert jets(a) == jets(b)
    first = jets(a)
    a.set_epoch(1)
    assert jets(a) != first
    b.set_epoch(1)
    assert jets(a) == jets(b)
    assert jets(JetLoader(ds, batch_size=8, seed=2)) != first


def test_every_row_once_per_epoch_without_drop_last(dataset):
    ds, _ = dataset
    loader = JetLoader(ds, "train", batch_size=7, shuffle=True, drop_last=False)
    for epoch in range(3):
        loader.set_epoch(epoch)
        got = sum(jets(loader), [])
        assert sorted(got) == sorted(set(got)) and len(got) == ds.rows("train")
    assert len(loader) == -(-ds.rows("train") // 7)


def test_drop_last_yields_only_full_batches(dataset):
    ds, _ = dataset
    loader = JetLoader(ds, batch_size=10)
    sizes = [len(b) for b in loader]
    assert sizes == [10] * (ds.rows("train") // 10) and len(loader) == len(sizes)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_read_disjoint_parts_with_equal_batch_counts(dataset, world):
    ds, _ = dataset
    per_rank = []
    for rank in range(world):
        loader = JetLoader(ds, batch_size=5, seed=3, rank=rank, world_size=world)
        loader.set_epoch(2)
        per_rank.append(sum(jets(loader), []))
    assert len({len(r) for r in per_rank}) == 1 and len(per_rank[0]) > 0
    flat = sum(per_rank, [])
    assert len(flat) == len(set(flat)), "ranks must not share rows"
    # without drop_last the ranks together cover the split exactly once
    cover = sum((sum(jets(JetLoader(ds, "val", batch_size=5, rank=r, world_size=world, shuffle=True,
                                    drop_last=False)), []) for r in range(world)), [])
    assert sorted(cover) == sorted(set(cover)) and len(cover) == ds.rows("val")


def test_tiny_subset_is_still_shared_between_ranks(dataset):
    ds, _ = dataset
    n = ds.rows("train", 0.1)
    assert n < 4 * 4  # fewer rows than pieces wanted for 4 ranks
    loaders = [JetLoader(ds, fraction=0.1, batch_size=1, rank=r, world_size=4) for r in range(4)]
    assert all(len(x) >= 1 for x in loaders)


def test_subset_rows_are_class_balanced(dataset):
    ds, _ = dataset
    for f in (0.1, 0.25, 0.5):
        loader = JetLoader(ds, fraction=f, batch_size=1000, drop_last=False)
        y = torch.cat([b.y for b in loader])
        assert len(y) == ds.rows("train", f) and (y == 1).sum() == (y == 0).sum()
    small = set(sum(jets(JetLoader(ds, fraction=0.1, batch_size=64, drop_last=False)), []))
    big = set(sum(jets(JetLoader(ds, fraction=0.5, batch_size=64, drop_last=False)), []))
    assert small < big


def test_scale_normalisation_divides_by_train_std(dataset):
    ds, src = dataset
    raw = next(iter(JetLoader(ds, "test", batch_size=8, normalize="none")))
    scaled = next(iter(JetLoader(ds, "test", batch_size=8)))
    assert torch.equal(raw.jet, scaled.jet)
    std = torch.tensor(ds.manifest["stats"]["channels"]["std"], dtype=torch.float32).view(1, -1, 1, 1)
    torch.testing.assert_close(scaled.x * std, raw.x, rtol=1e-6, atol=0)
    assert torch.equal(raw.x == 0, scaled.x == 0)
    np.testing.assert_array_equal(raw.x.numpy(), src["images"][raw.jet.numpy()])
    assert raw.x.dtype == torch.float32 and raw.x.shape == (8, 3, 125, 125) and raw.y.dtype == torch.int64


def test_unknown_fraction_lists_the_available_ones(dataset):
    ds, _ = dataset
    with pytest.raises(ConfigError, match="0.01, 0.1, 0.25, 0.5, 1"):
        JetLoader(ds, fraction=0.3)
    with pytest.raises(ConfigError, match="normalize"):
        JetLoader(ds, normalize="zscore")


def test_corrupt_shard_raises_from_the_prefetch_thread(dataset):
    ds, _ = dataset
    loader = JetLoader(ds, "test", batch_size=4, shuffle=False, mode="stream")
    path = ds.store.root / ds.shards("test")[0]["key"]
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match="checksum mismatch"):
        list(loader)


def test_breaking_early_does_not_hang(dataset):
    ds, _ = dataset
    loader = JetLoader(ds, batch_size=2, prefetch=1, mode="stream")
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert len(list(loader)) == len(loader)


def _prefetch_threads():
    import threading

    from jetlib.data.loader import PREFETCH_THREAD

    return [t for t in threading.enumerate() if t.name == PREFETCH_THREAD and t.is_alive()]


def test_stopping_early_leaves_no_live_thread(dataset):
    import gc

    ds, _ = dataset
    loader = JetLoader(ds, batch_size=2, prefetch=1, mode="stream")  # a full queue as soon as the consumer pauses
    for _ in loader:  # break
        break
    assert _prefetch_threads() == []
    with pytest.raises(KeyError):  # an exception in the consumer
        for _ in loader:
            raise KeyError("consumer failed")
    assert _prefetch_threads() == []
    it = iter(loader)  # an iterator dropped half-way (garbage collected)
    next(it)
    assert len(_prefetch_threads()) == 1
    del it
    gc.collect()
    assert _prefetch_threads() == []


def test_a_failing_read_behind_a_full_queue_does_not_block_the_thread(dataset, monkeypatch):
    ds, _ = dataset
    loader = JetLoader(ds, batch_size=2, prefetch=1, shuffle=False, window=1, mode="stream")
    real = JetLoader._read_piece

    def fails_on_the_third(self, p, calls=[]):  # noqa: B006 - counts calls across the epoch
        calls.append(p)
        if len(calls) == 3:
            raise OSError("disk gone")
        return real(self, p)

    monkeypatch.setattr(JetLoader, "_read_piece", fails_on_the_third)
    it = iter(loader)
    next(it)  # the producer now holds the error with no room in the queue: its last put must give up
    it.close()
    assert _prefetch_threads() == []


# --- the device-resident mode ---

def bits(t):
    """A tensor's raw bits, so that equality below is bitwise (a -0.0 or a NaN payload would differ)."""
    return t.contiguous().view(torch.int32 if t.element_size() == 4 else torch.int64)


def assert_same_batches(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        for key in ("x", "jet", "y", "m0", "pt"):
            u, v = getattr(x, key), getattr(y, key)
            assert u.dtype == v.dtype and u.shape == v.shape, key
            assert torch.equal(bits(u), bits(v)), key


@pytest.mark.parametrize("split, batch, world, shuffle, drop_last, window, normalize", [
    ("train", 8, 1, True, True, 8, "scale"),
    ("train", 7, 2, True, False, 1, "scale"),
    ("train", 5, 3, True, True, 2, "none"),
    ("val", 3, 2, True, False, 3, "scale"),
    ("test", 16, 1, False, False, 8, "scale"),
])
@pytest.mark.parametrize("static", [False, True])
def test_resident_gives_exactly_the_streamed_batches(dataset, split, batch, world, shuffle, drop_last, window,
                                                     normalize, static):
    """For every seed, epoch and rank the resident loader yields the streaming loader's batches, bit for
    bit: same jets in the same order, same pixel values (normalised the same way), same dtypes. With
    ``static`` the fixed-capacity gather (the CUDA path) is run on CPU."""
    ds, _ = dataset
    for rank in range(world):
        kw = dict(batch_size=batch, seed=4, rank=rank, world_size=world, shuffle=shuffle, drop_last=drop_last,
                  window=window, normalize=normalize)
        stream, resident = JetLoader(ds, split, mode="stream", **kw), JetLoader(ds, split, mode="resident", **kw)
        resident.static_shapes = static
        for epoch in (0, 3):
            stream.set_epoch(epoch)
            resident.set_epoch(epoch)
            assert len(stream) == len(resident)
            assert_same_batches(list(stream), list(resident))


def test_resident_subset_and_raw_values(dataset):
    ds, src = dataset
    kw = dict(fraction=0.25, batch_size=4, drop_last=False, seed=1)
    assert_same_batches(list(JetLoader(ds, mode="stream", **kw)), list(JetLoader(ds, mode="resident", **kw)))
    b = next(iter(JetLoader(ds, "test", batch_size=8, normalize="none", mode="resident")))
    np.testing.assert_array_equal(b.x.numpy(), src["images"][b.jet.numpy()])


def test_static_capacity_holds_the_fullest_batch(dataset):
    """The fixed capacity for B jets is the sum of the B largest pixel counts: any batch fits."""
    ds, _ = dataset
    loader = JetLoader(ds, batch_size=6, mode="resident")
    list(loader)
    r = loader.resident
    counts = np.sort(r.counts.numpy())[::-1]
    assert r.capacity[6] == counts[:6].sum() and r.capacity[1] == counts[0]
    top = torch.from_numpy(np.argsort(r.counts.numpy())[::-1][:6].copy())  # the fullest batch there is
    x = r.batch(top).x
    r.static = True
    assert torch.equal(x, r.batch(top).x)


def test_auto_mode_follows_the_stated_memory_rule(dataset, monkeypatch):
    import jetlib.data.loader as loader_mod

    ds, _ = dataset
    need = loader_mod.resident_bytes(ds, ds.rows("train"))
    budget = need / loader_mod.RESIDENT_FRACTION
    monkeypatch.setattr(loader_mod, "device_memory_bytes", lambda device: int(budget))
    assert JetLoader(ds, batch_size=4).mode == "resident"
    monkeypatch.setattr(loader_mod, "device_memory_bytes", lambda device: int(budget) - 64)
    assert JetLoader(ds, batch_size=4).mode == "stream"
    loader = JetLoader(ds, batch_size=4, mode="resident")
    list(loader)
    assert 0.7 < loader.resident.nbytes / need < 1.3  # the estimate is the real footprint, within 30%
    with pytest.raises(ConfigError, match="loader mode"):
        JetLoader(ds, mode="gpu")


def test_cpu_device_memory_is_the_lower_of_ram_and_cgroup_shared_by_local_ranks(monkeypatch):
    import os

    from jetlib import device

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cgroup_memory_limit", lambda: None)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert device.device_memory_bytes(cpu) == ram
    monkeypatch.setattr(device, "cgroup_memory_limit", lambda: 1 << 30)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert device.device_memory_bytes(cpu) == (1 << 30) // 4


def test_streaming_host_path_keeps_idx_int32(dataset):
    ds, _ = dataset
    loader = JetLoader(ds, batch_size=8, mode="stream")
    parts = next(iter(loader._host_batches(pin=False)))
    assert parts["idx"].dtype == torch.int32 and parts["val"].dtype == torch.float32
    assert len(parts["jet"]) == 8 and int(parts["counts"].sum()) == len(parts["idx"])


def test_corrupt_shard_is_refused_by_the_resident_loader_too(dataset):
    ds, _ = dataset
    path = ds.store.root / ds.shards("test")[0]["key"]
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match="checksum mismatch"):
        list(JetLoader(ds, "test", batch_size=4, mode="resident"))


def test_parallel_readers_change_nothing_but_speed(dataset):
    ds, _ = dataset
    kw = dict(batch_size=6, seed=2, mode="stream", drop_last=False)
    one, three = JetLoader(ds, readers=1, **kw), JetLoader(ds, readers=3, **kw)
    assert one.readers == 1 and three.readers == 3
    for epoch in (0, 1):
        one.set_epoch(epoch)
        three.set_epoch(epoch)
        assert_same_batches(list(one), list(three))


def test_a_cached_shard_is_checked_against_the_manifest_it_is_read_for(dataset, tmp_path):
    """An S3 dataset's shards are cached by sha256; a manifest rewritten later with the same sha256 but
    inflated counts must be refused on a cache hit exactly as on a fresh read (``check_shard``)."""
    from jetlib.data.loader import ShardReader

    ds, _ = dataset
    shard = dict(ds.shards("train")[0])
    first = ShardReader(ds, tmp_path / "cache")
    first.remote = True  # cache on disk as for an S3 store
    data = first.get(shard)
    assert (tmp_path / "cache" / f"{shard['sha256']}.parquet").read_bytes() == data
    again = ShardReader(ds, tmp_path / "cache")
    again.remote = True
    assert again.get(shard) == data  # an honest cache hit
    inflated = {**shard, "rows": shard["rows"] * 4}
    fresh = ShardReader(ds, tmp_path / "cache")
    fresh.remote = True
    with pytest.raises(DataError, match="the manifest says"):
        fresh.get(inflated)
