"""Inference preprocessing of the VoxelFM reference (``dinov2/inference``), with the voxel ->
world affine tracked through every step.

Steps, in the reference's order:
1. axis order: the canonical volume ``(1, X, Y, Z)`` holds the file's own index axes (i, j, k);
   the reference feeds ``(D, H, W) = (k, j, i)`` (its NIfTI loader rearranges ``x y z -> z y x``,
   its DICOM loader stacks ``(slice, row, col)``, SimpleITK arrays are ``(k, j, i)``), so the
   array is transposed to ``(Z, Y, X)``. No reorientation.
2. HU clipped to ``[hu_min, hu_max]`` = [-1000, 1900].
3. optional foreground crop: ``HU > -800``, a k^3 majority filter (k = 21), bounding box of
   the result grown by k // 2 voxels (on the original grid).
4. trilinear resample (``align_corners=False``, output size ``round(n * s / t)``) to isotropic
   spacing ``t = max(min(spacing), 0.75 mm)``; skipped when the spacing is already isotropic:
   the three spacings exactly equal, as in the reference (``isotropy_rtol`` > 0 accepts spacings
   within that relative tolerance, e.g. float noise of an oblique affine, as isotropic).
5. optional trilinear downsample so that the token count stays <= ``max_tokens`` (25,000).
6. centre crop of every axis to a multiple of the patch size (offset ``(n % 14) // 2``).
7. ``(x - mean) / std`` with mean -573.8, std 461.3.

A resize from ``n`` to ``m`` voxels along an axis maps output index ``u`` to input coordinate
``(u + 0.5) * n / m - 0.5`` (the outer voxel edges stay fixed: PyTorch's and MONAI ``Resize``'s
convention); a crop starting at ``o`` maps ``u`` to ``u + o``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ctbench.errors import CTBenchError

__all__ = ["PreprocessConfig", "preprocess", "token_affine", "foreground_box", "max_tokens_size", "is_isotropic"]

# index (d, h, w) of the transposed array -> index (i, j, k) of the canonical array
_DHW_TO_IJK = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


@dataclass(frozen=True)
class PreprocessConfig:
    hu_min: float = -1000.0
    hu_max: float = 1900.0
    norm_mean: float = -573.8
    norm_std: float = 461.3
    min_spacing: float = 0.75
    crop_background: bool = True  # the reference evaluation pipeline crops (k = 21)
    crop_threshold: float = -800.0
    crop_kernel: int = 21
    max_tokens: int | None = 25_000
    patch_size: int = 14
    axis_order: str = "(D, H, W) = (k, j, i)"
    isotropy_rtol: float = 0.0  # 0: exact equality, the reference's rule

    def as_dict(self) -> dict:
        return asdict(self)


def _resize_matrix(old: tuple[int, ...], new: tuple[int, ...]) -> np.ndarray:
    m = np.eye(4)
    for ax, (n, k) in enumerate(zip(old, new)):
        f = n / k
        m[ax, ax], m[ax, 3] = f, 0.5 * f - 0.5
    return m


def _shift_matrix(offset) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = offset
    return m


def _resize(x: Tensor, size: tuple[int, int, int]) -> Tensor:
    if tuple(x.shape) == tuple(size):
        return x
    return F.interpolate(x[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]


def _box_sum(mask: Tensor, k: int) -> Tensor:
    """Sum over the k^3 box centred on each voxel, zero padded ('same' size), exact integers."""
    r = k // 2
    out = mask.to(torch.int32)
    for dim in range(3):
        pad = [0] * 6
        pad[2 * (2 - dim)] = pad[2 * (2 - dim) + 1] = r
        padded = F.pad(out, pad)
        zero = torch.zeros_like(padded.narrow(dim, 0, 1))
        c = torch.cat((zero, padded.cumsum(dim, dtype=torch.int32)), dim=dim)
        n = out.shape[dim]
        out = c.narrow(dim, k, n) - c.narrow(dim, 0, n)
    return out


def foreground_box(hu: Tensor, threshold: float = -800.0, k: int = 21) -> tuple[slice, ...] | None:
    """Bounding box (slices) of the k^3-majority-filtered ``hu > threshold`` mask grown by
    ``k // 2``; ``None`` when the filtered mask is empty (the volume is then left uncropped)."""
    keep = _box_sum(hu > threshold, k) * 2 > k**3
    if not bool(keep.any()):
        return None
    idx = keep.nonzero()
    lo = (idx.min(0).values - k // 2).clamp(min=0).tolist()
    hi = (idx.max(0).values + k // 2).tolist()
    return tuple(slice(a, min(b, n - 1) + 1) for a, b, n in zip(lo, hi, hu.shape))


def max_tokens_size(shape: tuple[int, int, int], patch: int, max_tokens: int) -> tuple[int, int, int]:
    """Reference rule: scale all axes by ``s = (max_tokens / tokens) ** (1/3)`` (sizes truncated
    with ``int``), trying ``s`` x {0.98, 0.99, 1, 1.01, 1.02} and keeping the largest token count
    within budget (``0.95 s`` when none fits)."""
    tokens = math.prod(n // patch for n in shape)
    if tokens <= max_tokens:
        return tuple(shape)

    def size(scale: float) -> tuple[int, int, int]:
        return tuple(int(n * scale) for n in shape)

    scale = (max_tokens / tokens) ** (1 / 3)
    best, best_tokens = None, -1
    for delta in (0.98, 0.99, 1.0, 1.01, 1.02):
        cand = size(scale * delta)
        t = math.prod(n // patch for n in cand)
        if best_tokens < t <= max_tokens:
            best, best_tokens = cand, t
    return best if best is not None else size(scale * 0.95)


def _as_volume(volume, affine) -> tuple[Tensor, np.ndarray]:
    if affine is None:
        affine = getattr(volume, "affine", None)
        if affine is None:
            raise CTBenchError("VoxelFM preprocessing needs a volume with an affine (a MONAI MetaTensor)")
    affine = np.asarray(affine.cpu() if isinstance(affine, Tensor) else affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise CTBenchError(f"volume affine must be 4x4, got {affine.shape}")
    x = volume.as_tensor() if hasattr(volume, "as_tensor") else torch.as_tensor(np.asarray(volume))
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise CTBenchError(f"expected a single-channel volume (1, X, Y, Z), got {tuple(x.shape)}")
        x = x[0]
    if x.ndim != 3:
        raise CTBenchError(f"expected a volume (1, X, Y, Z), got shape {tuple(x.shape)}")
    return x, affine


def preprocess(
    volume, cfg: PreprocessConfig | None = None, *, affine=None, device: str | torch.device = "cpu"
) -> tuple[Tensor, np.ndarray]:
    """Canonical volume (MetaTensor ``(1, X, Y, Z)``, HU, ``.affine`` voxel -> world RAS mm) ->
    (network input ``(D, H, W)`` float32, 4x4 affine mapping its index (d, h, w) -> world mm)."""
    cfg = cfg or PreprocessConfig()
    x, aff = _as_volume(volume, affine)
    x = x.to(device=device, dtype=torch.float32).permute(2, 1, 0).contiguous()
    aff = aff @ _DHW_TO_IJK
    x = x.clamp(cfg.hu_min, cfg.hu_max)

    if cfg.crop_background:
        box = foreground_box(x, cfg.crop_threshold, cfg.crop_kernel)
        if box is not None:
            x = x[box]
            aff = aff @ _shift_matrix([s.start for s in box])

    if not is_isotropic(aff, cfg.isotropy_rtol):
        spacing = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
        target = max(float(spacing.min()), cfg.min_spacing)
        size = tuple(int(round(n * s / target)) for n, s in zip(x.shape, spacing))
        aff = aff @ _resize_matrix(tuple(x.shape), size)
        x = _resize(x, size)

    if cfg.max_tokens:
        size = max_tokens_size(tuple(x.shape), cfg.patch_size, cfg.max_tokens)
        aff = aff @ _resize_matrix(tuple(x.shape), size)
        x = _resize(x, size)

    p = cfg.patch_size
    if any(n < p for n in x.shape):
        raise CTBenchError(
            f"volume too small for VoxelFM: {tuple(x.shape)} voxels after preprocessing, every "
            f"axis needs at least {p}"
        )
    start = [(n % p) // 2 for n in x.shape]
    x = x[tuple(slice(o, o + n - n % p) for o, n in zip(start, x.shape))]
    aff = aff @ _shift_matrix(start)

    x = (x - cfg.norm_mean) / cfg.norm_std
    return x.contiguous(), aff


def is_isotropic(affine: np.ndarray, rtol: float = 0.0) -> bool:
    """Whether the voxel spacings (column norms of ``affine``) count as isotropic: exactly equal
    for ``rtol == 0`` (the reference compares its three spacings with ``==``), else equal within
    relative tolerance ``rtol``."""
    spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    if rtol == 0:
        return bool(np.all(spacing == spacing[0]))
    return bool(np.allclose(spacing, spacing[0], rtol=rtol, atol=0.0))


def token_affine(input_affine: np.ndarray, patch_size: int = 14) -> np.ndarray:
    """Token index (a, b, c) -> world mm: token centres sit at voxel ``p * a + (p - 1) / 2``."""
    m = np.eye(4)
    m[:3, :3] *= patch_size
    m[:3, 3] = (patch_size - 1) / 2
    return np.asarray(input_affine, dtype=np.float64) @ m
