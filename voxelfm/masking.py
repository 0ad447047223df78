"""3D block masking of the global crops for the iBOT loss (reference parameters).

Of the ``n`` global-crop images of a batch, ``int(n * probability)`` are masked; their masking
ratios are stratified: image ``i`` draws its ratio uniformly in ``[r_i, r_{i+1}]`` where
``r = linspace(0.1, 0.5, n_masked + 1)``, and masks ``int(N * ratio)`` of its ``N`` patches. A
mask is built from random cuboid blocks (at least 4 patches, at most half the grid, aspect
ratios h/w and d/w log-uniform in [0.3, 1/0.3], each side strictly smaller than the grid) and
topped up with random single patches. The list is shuffled so masked images land anywhere.
All randomness comes from the given ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["block_mask", "MaskBatch", "sample_masks"]


def _add_block(mask: np.ndarray, max_patches: float, rng: np.random.Generator, min_patches: int,
               log_aspect: tuple[float, float], tries: int = 10) -> int:
    """Try up to ``tries`` random cuboids; mask the first that adds between 1 and
    ``max_patches`` new patches. Returns how many patches were added."""
    D, H, W = mask.shape
    for _ in range(tries):
        target = min_patches + (max_patches - min_patches) * rng.random()  # high < low allowed
        a_hw = math.exp(rng.uniform(*log_aspect))
        a_dw = math.exp(rng.uniform(*log_aspect))
        w = int(round((target / (a_hw * a_dw)) ** (1 / 3)))
        h, d = int(round(w * a_hw)), int(round(w * a_dw))
        if not (0 < w < W and 0 < h < H and 0 < d < D):
            continue
        top = int(rng.integers(0, H - h + 1))
        left = int(rng.integers(0, W - w + 1))
        front = int(rng.integers(0, D - d + 1))
        block = mask[front : front + d, top : top + h, left : left + w]
        new = d * h * w - int(block.sum())
        if 0 < new <= max_patches:
            block[...] = True
            return new
    return 0


def block_mask(
    grid: tuple[int, int, int],
    n_mask: int,
    rng: np.random.Generator,
    min_patches: int = 4,
    max_patches: float | None = None,
    min_aspect: float = 0.3,
) -> np.ndarray:
    """Boolean ``grid`` mask with exactly ``min(n_mask, N)`` patches set: cuboid blocks, then
    random patches to reach the count. ``max_patches`` (per block) defaults to half the grid."""
    mask = np.zeros(grid, dtype=bool)
    n_total = mask.size
    n_mask = min(int(n_mask), n_total)
    cap = 0.5 * n_total if max_patches is None else max_patches
    log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
    count = 0
    while count < n_mask:
        added = _add_block(mask, min(n_mask - count, cap), rng, min_patches, log_aspect)
        if added == 0:
            break
        count += added
    missing = n_mask - int(mask.sum())
    if missing > 0:
        flat = mask.reshape(-1)
        free = np.flatnonzero(~flat)
        flat[rng.choice(free, size=missing, replace=False)] = True
    return mask


@dataclass
class MaskBatch:
    """``masks`` ``(n_images, N)`` bool; ``indices`` of the masked patches in the flattened
    ``(n_images * N)`` token list; ``weights`` ``1 / n_masked(image)`` per masked patch."""

    masks: Tensor
    indices: Tensor
    weights: Tensor

    @property
    def n_masked(self) -> int:
        return int(self.indices.numel())


def sample_masks(
    n_images: int,
    grid: tuple[int, int, int],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (0.1, 0.5),
    probability: float = 0.5,
) -> MaskBatch:
    """Masks for the ``n_images`` global crops of a batch (see the module docstring)."""
    n_tokens = int(np.prod(grid))
    n_masked_images = int(n_images * probability)
    bounds = np.linspace(ratio[0], ratio[1], n_masked_images + 1)
    masks = []
    for i in range(n_masked_images):
        r = rng.uniform(bounds[i], bounds[i + 1])
        masks.append(block_mask(grid, int(n_tokens * r), rng).reshape(-1))
    masks += [np.zeros(n_tokens, dtype=bool)] * (n_images - n_masked_images)
    order = rng.permutation(n_images)
    stacked = torch.from_numpy(np.stack([masks[i] for i in order]))
    indices = stacked.reshape(-1).nonzero().reshape(-1)
    per_image = stacked.sum(-1).clamp(min=1).float()
    weights = (1.0 / per_image).unsqueeze(-1).expand_as(stacked)[stacked]
    return MaskBatch(masks=stacked, indices=indices, weights=weights)
