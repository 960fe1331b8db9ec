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


def test_crop_keeps_at_least_the_minimum_area_and_stays_inside():
    # two ramps encode where every output pixel was sampled from: channel 0 holds 10 + the normalised
    # column coordinate u, channel 1 10 + the row coordinate. A crop of side s centred at c maps output
    # coordinate u to s * u + c, so the ramps read back each sample's side and centre.
    torch.manual_seed(1)
    w = 50
    u = (2 * torch.arange(w) + 1) / w - 1  # pixel centres, align_corners=False
    x = torch.stack([10 + u.expand(w, w), 10 + u.view(-1, 1).expand(w, w)]).expand(400, 2, w, w).contiguous()
    out = resized_crop(x, 0.8)
    inner = slice(1, w - 1)  # the outermost pixels blend with the zero padding

    def fit(profile):  # (B, w) -> side, centre of the linear map u -> s u + c
        side = (profile[:, w - 2] - profile[:, 1]) / (u[w - 2] - u[1])
        return side, profile[:, inner].mean(1) - 10 - side * u[inner].mean()

    sx, cx = fit(out[:, 0, w // 2])
    sy, cy = fit(out[:, 1, :, w // 2])
    torch.testing.assert_close(sx, sy, rtol=1e-4, atol=1e-4)  # square crops
    area = sx * sy
    assert (area >= 0.8 - 1e-3).all() and (area <= 1 + 1e-3).all(), (area.min(), area.max())
    assert area.min() < 0.82 and area.max() > 0.98  # the whole range [0.8, 1] is drawn
    assert ((cx.abs() <= 1 - sx + 1e-3) & (cy.abs() <= 1 - sy + 1e-3)).all()  # the window never leaves the image
    assert (cx.abs() > 0.02).any()  # and it moves


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
