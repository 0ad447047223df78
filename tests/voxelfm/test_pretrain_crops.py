"""Multi-crop augmentation: crop geometry, axis permutation, flips, HU window, normalisation."""

import itertools

import pytest
import torch

from voxelfm.crops import CropConfig, MultiCrop, random_flip, random_resized_crop, random_window


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_full_scale_crop_is_a_permutation_of_the_volume():
    vol = torch.arange(6 * 6 * 6, dtype=torch.float32).reshape(6, 6, 6)
    seen = set()
    for seed in range(30):
        out = random_resized_crop(vol, (6, 6, 6), (1.0, 1.0), gen(seed))
        matches = [p for p in itertools.permutations(range(3)) if torch.equal(out, vol.permute(p))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 6  # every axis permutation occurs


def test_crop_size_follows_scale_of_smallest_side():
    # volume 40 x 20 x 30: smallest side 20; target 10^3; scale 0.5 -> a 10^3 crop, no resampling
    vol = torch.randn(40, 20, 30)
    out = random_resized_crop(vol, (10, 10, 10), (0.5, 0.5), gen(1))
    assert out.shape == (10, 10, 10)
    a, b, c = (int(i) for i in (vol == out[0, 0, 0]).nonzero()[0])  # random values: unique
    assert any(torch.equal(out.permute(p), vol[a : a + 10, b : b + 10, c : c + 10])
               for p in itertools.permutations(range(3)))
    # anisotropic target on a small volume: the crop is shrunk to fit, then resized
    big = random_resized_crop(torch.randn(8, 8, 8), (14, 28, 14), (1.0, 1.0), gen(2))
    assert big.shape == (14, 28, 14)


def test_flip():
    vol = torch.randn(3, 4, 5)
    assert torch.equal(random_flip(vol, 1.0, gen()), vol.flip((0, 1, 2)))
    assert torch.equal(random_flip(vol, 0.0, gen()), vol)


def test_window_clips_around_the_median():
    # half fat (-100 HU), half muscle (40 HU), a little bone
    vol = torch.full((20, 20, 20), -100.0)
    vol[10:] = 40.0
    vol[:, :, :1] = 1000.0
    out = random_window(vol, 1.0, gen(4))
    lo, hi = float(out.min()), float(out.max())
    assert hi - lo >= 10.0 - 1e-4 and hi < 1000.0  # the bone is clipped
    inside = (vol >= lo) & (vol <= hi)
    assert torch.equal(out[inside], vol[inside])  # values inside the window are untouched
    assert torch.equal(random_window(vol, 0.0, gen(4)), vol)


def test_multicrop_shapes_normalisation_and_determinism():
    cfg = CropConfig(global_size=(28, 28, 28), local_size=(14, 14, 14), n_local=3)
    mc = MultiCrop(cfg)
    vol = torch.full((40, 40, 40), -573.8)
    g, loc = mc(vol, gen())
    assert len(g) == 2 and len(loc) == 3
    assert all(x.shape == (28, 28, 28) for x in g) and all(x.shape == (14, 14, 14) for x in loc)
    assert all(float(x.abs().max()) < 1e-4 for x in g + loc)  # (HU - mean) / std = 0
    air = torch.full((30, 30, 30), -3000.0)  # clipped to -1000 before normalising
    assert float(mc(air, gen())[1][0].mean()) == pytest.approx((-1000 + 573.8) / 461.3, abs=1e-5)
    vol = torch.randn(40, 36, 30) * 300
    a, b = mc(vol, gen(7)), mc(vol, gen(7))
    assert all(torch.equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
    c = mc(vol, gen(8))
    assert not torch.equal(a[0][0], c[0][0])


def test_crop_config_validation():
    with pytest.raises(ValueError):
        CropConfig(global_scale=(0.5, 0.2))
