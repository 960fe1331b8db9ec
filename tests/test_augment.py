import pytest
import torch

from jetlib.augment import AugmentConfig, augment, resized_crop, symmetric_rotate_shift, two_views


def jets(b=16, c=3, size=33, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, size, size, generator=g) * (torch.rand(b, c, size, size, generator=g) < 0.1)
    x[:, :, size // 2, size // 2] += 10.0  # a hot core at the jet axis
    return x


@pytest.mark.parametrize("preset", ["seed", "physics"])
def test_shape_nonnegative_and_different_per_sample(preset):
    torch.manual_seed(0)
    same = jets(1).expand(12, -1, -1, -1).contiguous()  # twelve copies of one jet
    out = augment(same, AugmentConfig(preset))
    assert out.shape == same.shape and out.dtype == same.dtype
    assert (out >= 0).all()
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 12)), "each sample draws its own transform"
    v1, v2 = two_views(same, AugmentConfig(preset))
    assert not torch.equal(v1, v2)


def test_views_are_reproducible_from_the_rng_state():
    x = jets()
    torch.manual_seed(5)
    a = two_views(x, AugmentConfig("physics"))
    torch.manual_seed(5)
    b = two_views(x, AugmentConfig("physics"))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_crop_keeps_at_least_the_minimum_area():
    # a uniform image cropped and resized stays uniform; a border pixel marks where the crop went
    torch.manual_seed(1)
    x = torch.zeros(200, 1, 50, 50)
    x[:, :, 1:-1, 1:-1] = 1.0
    out = resized_crop(x, 0.8)
    # the crop window never leaves the image: the centre stays filled
    assert (out[:, :, 20:30, 20:30] > 0.99).all()


def test_pure_symmetries_permute_pixels():
    torch.manual_seed(2)
    x = jets(32, size=33)
    y = symmetric_rotate_shift(x, 0.0, 0.0)
    group = lambda img: [torch.rot90(f, k, (-2, -1)) for f in (img, img.flip(-1), img.flip(-2),
                                                                 img.flip(-1).flip(-2)) for k in range(4)]
    for i in range(32):
        assert min((y[i] - t).abs().max().item() for t in group(x[i])) < 1e-4


def jet_like(b=256, size=63, seed=3):
    """Energy falling steeply away from the axis, as in a jet; sparse."""
    g = torch.Generator().manual_seed(seed)
    r = torch.linspace(-1, 1, size).abs()
    profile = torch.exp(-(r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) / 0.02)
    hits = torch.rand(b, 3, size, size, generator=g) < 0.15
    return profile * hits * torch.rand(b, 3, size, size, generator=g) * 100


def test_physics_keeps_the_jet_energy_scale():
    torch.manual_seed(3)
    x = jet_like()
    ratio = augment(x, AugmentConfig("physics")).sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert abs(ratio.mean().item() - 1) < 0.05  # no global rescaling: only small local changes
    assert ratio.std().item() < 0.1


def test_seed_brightness_does_rescale():
    torch.manual_seed(4)
    x = jets(256, size=63)
    ratio = augment(x, AugmentConfig("seed", crop_min_area=1.0)).sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert ratio.min() < 0.9 and ratio.max() > 1.1


def test_unknown_preset():
    with pytest.raises(ValueError, match="seed, physics"):
        AugmentConfig("colour")
