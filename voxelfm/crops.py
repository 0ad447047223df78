"""Multi-crop augmentation of the reference pre-training (on HU volumes ``(D, H, W)``).

- random resized crop: the target axes are assigned to the volume's axes by a random
  permutation; a crop with the target's proportions whose smallest side is ``s`` times the
  volume's smallest side (``s`` uniform in ``scale``, shrunk so that it fits) is cut at a random
  position, permuted back and resized trilinearly to the target size;
- global crops: 2 per volume, ``scale`` (0.32, 1.0), flips of each axis with p = 0.5, the first
  one also a random HU window with p = 0.5;
- local crops: ``n_local`` per volume, ``scale`` (0.05, 0.32), no other augmentation;
- every crop ends with the inference normalisation ``(clip(x, lo, hi) - mean) / std``.

The random window takes the 1/25/50/75/99th HU percentiles of the crop (512-bin histogram
over [-1000, 1900]), draws a level ``N(median, 0.2 IQR)`` and a width ``U(0.5, 2) IQR`` (at
least 10 HU; IQR falls back to the 1-99 range when under 1 HU) and clips to that window.
All randomness comes from the given ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CropConfig", "random_resized_crop", "random_flip", "random_window", "MultiCrop"]

Size3 = tuple[int, int, int]


@dataclass(frozen=True)
class CropConfig:
    global_size: Size3 = (112, 112, 112)
    local_size: Size3 = (56, 56, 56)
    n_local: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    flip_p: float = 0.5
    window_p: float = 0.5
    hu_min: float = -1000.0
    hu_max: float = 1900.0
    norm_mean: float = -573.8
    norm_std: float = 461.3

    def __post_init__(self) -> None:
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must satisfy 0 < min <= max, got {(lo, hi)}")
        if self.n_local < 0:
            raise ValueError(f"n_local must be >= 0, got {self.n_local}")


def _uniform(lo: float, hi: float, gen: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def random_resized_crop(vol: Tensor, size: Size3, scale: tuple[float, float], gen: torch.Generator) -> Tensor:
    """Random crop with ``size``'s proportions and a random axis assignment, resized to ``size``."""
    if vol.ndim != 3:
        raise ValueError(f"expected a volume (D, H, W), got {tuple(vol.shape)}")
    shape = [int(n) for n in vol.shape]
    perm = torch.randperm(3, generator=gen).tolist()  # volume axis i takes target axis perm[i]
    target = [float(size[p]) for p in perm]
    s = _uniform(scale[0], scale[1], gen)
    alpha = min(min(shape) * s / min(target), min(n / t for n, t in zip(shape, target)))
    dims = [min(max(1, int(round(alpha * t))), n) for t, n in zip(target, shape)]
    starts = [int(torch.randint(0, n - d + 1, (), generator=gen)) for n, d in zip(shape, dims)]
    crop = vol[tuple(slice(a, a + d) for a, d in zip(starts, dims))].float()
    crop = crop.permute([perm.index(j) for j in range(3)])  # target axis j <- volume axis
    return F.interpolate(crop[None, None], size=tuple(size), mode="trilinear", align_corners=False)[0, 0]


def random_flip(vol: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Flip each axis independently with probability ``p``."""
    dims = [d for d in range(3) if float(torch.rand((), generator=gen)) < p]
    return vol.flip(dims) if dims else vol


_QUANTILES = torch.tensor([0.01, 0.25, 0.50, 0.75, 0.99])


def random_window(vol: Tensor, p: float, gen: torch.Generator, hu_range: tuple[float, float] = (-1000.0, 1900.0),
                  bins: int = 512) -> Tensor:
    """With probability ``p``, clip ``vol`` (HU) to a random window around its median."""
    if float(torch.rand((), generator=gen)) >= p:
        return vol
    lo, hi = hu_range
    cdf = torch.histc(vol.float(), bins=bins, min=lo, max=hi).cumsum(0)
    idx = torch.searchsorted(cdf, _QUANTILES * cdf[-1]).clamp(0, bins - 1)
    p_low, q1, median, q3, p_high = (lo + idx.double() * (hi - lo) / bins).tolist()
    iqr = q3 - q1
    if iqr < 1.0:
        iqr = max(p_high - p_low, 1.0)
    level = median + 0.2 * iqr * float(torch.randn((), generator=gen))
    width = max(_uniform(0.5 * iqr, 2.0 * iqr, gen), 10.0)
    return vol.clamp(level - width / 2, level + width / 2)


class MultiCrop:
    """``MultiCrop(cfg)(hu_volume, generator)`` -> (2 global crops, ``n_local`` local crops),
    normalised network inputs."""

    def __init__(self, cfg: CropConfig) -> None:
        self.cfg = cfg

    def normalise(self, x: Tensor) -> Tensor:
        c = self.cfg
        return (x.clamp(c.hu_min, c.hu_max) - c.norm_mean) / c.norm_std

    def __call__(self, vol: Tensor, gen: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        c = self.cfg
        globals_ = []
        for i in range(2):
            x = random_resized_crop(vol, c.global_size, c.global_scale, gen)
            x = random_flip(x, c.flip_p, gen)
            if i == 0:
                x = random_window(x, c.window_p, gen, (c.hu_min, c.hu_max))
            globals_.append(self.normalise(x))
        locals_ = [self.normalise(random_resized_crop(vol, c.local_size, c.local_scale, gen))
                   for _ in range(c.n_local)]
        return globals_, locals_
