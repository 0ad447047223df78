"""The segmentation heads and their loss, batched over cases of one grid shape.

Heads (``probe``):
- ``linear``: a per-token linear classifier (a 1x1x1 convolution) on standardised tokens;
- ``decoder``: a light conv decoder computed on the token grid. A 1x1 stem and three residual
  depthwise-separable 3x3x3 blocks give every token features with spatial context; a 1x1
  convolution turns them into, per token, ``K`` coarse logits and ``K x factor^3`` sub-cell
  logits. On the output grid (``factor`` times finer) the coarse logits upsampled trilinearly
  (smooth across token borders) and the sub-cell logits put in place (pixel shuffle: detail
  inside a token) are added, then filtered per class by learnt 3-tap filters along each axis
  (:class:`AxisFilter`, identity at the start). Every convolution runs at the token grid, none at
  the fine one, so a step costs a fraction of the earlier decoder's (transposed convolutions
  and blocks at each doubling of the grid, up to 64 times as many cells at ``factor`` 4).

Loss (:func:`dice_ce_loss`): per case, MONAI's ``DiceCELoss(softmax=True, weight=w)`` on the
case's valid cells (softmax Dice with 1e-5 smoothing per class, weighted and averaged over
classes, plus the class-weighted cross-entropy averaged over cells), averaged over the cases
of the batch; soft (distribution) targets or hard labels.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

SMOOTH = 1e-5  # MONAI DiceLoss smooth_nr = smooth_dr
BLOCKS = 3  # residual blocks of the decoder, on the token grid
MAX_WEIGHT_RATIO = 5.0


class _Block(nn.Module):
    """Residual depthwise 3x3x3 + pointwise convolution: spatial context at a small cost."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv3d(width, width, 3, padding=1, groups=width)
        self.pointwise = nn.Conv3d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pointwise(nn.functional.gelu(self.depthwise(x)))


@lru_cache(maxsize=64)
def _upsample_matrix(n: int, factor: int) -> torch.Tensor:
    """``(n * factor, n)`` weights of linear upsampling along one axis, the geometry of
    ``interpolate(mode="trilinear", align_corners=False)`` (edge cells clamped)."""
    j = np.arange(n * factor)
    src = np.maximum((j + 0.5) / factor - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = np.zeros((n * factor, n))
    np.add.at(w, (j, i0), 1 - (src - i0))
    np.add.at(w, (j, i1), src - i0)
    return torch.tensor(w, dtype=torch.float32)


def upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Trilinear upsampling of ``(B, K, a, b, c)`` by ``factor`` as three small matrix products."""
    a, b, c = (_upsample_matrix(int(n), factor).to(x.device) for n in x.shape[2:])
    x = torch.einsum("bkxyz,Xx->bkXyz", x, a)
    x = torch.einsum("bkxyz,Yy->bkxYz", x, b)
    return torch.einsum("bkxyz,Zz->bkxyZ", x, c)


def pixel_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(B, K * f^3, a, b, c)`` -> ``(B, K, a f, b f, c f)``: channel ``k f^3 + (i f + j) f + l``
    of a token becomes its sub-cell ``(i, j, l)`` of class ``k``."""
    B, ch, a, b, c = x.shape
    k = ch // factor**3
    x = x.reshape(B, k, factor, factor, factor, a, b, c).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(B, k, a * factor, b * factor, c * factor)


class AxisFilter(nn.Module):
    """Per class, a learnt 3-tap filter along each grid axis in turn (zero beyond the grid),
    initialised to the identity: lets the fine logits blend across token borders at a few
    operations per cell."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        weight = torch.zeros(3, classes, 3)
        weight[:, :, 1] = 1.0
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis in range(3):
            dim, n = 2 + axis, x.shape[2 + axis]
            pad = [0] * 6
            pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = 1
            xp = nn.functional.pad(x, pad)
            w = self.weight[axis][None, :, :, None, None, None]
            x = (w[:, :, 0] * xp.narrow(dim, 0, n) + w[:, :, 1] * xp.narrow(dim, 1, n)
                 + w[:, :, 2] * xp.narrow(dim, 2, n))
        return x


class ConvDecoder(nn.Module):
    """Tokens ``(B, C, *grid)`` -> logits ``(B, K, *grid * factor)`` (see the module docstring)."""

    def __init__(self, channels: int, classes: int, width: int, factor: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(channels, width, 1), *(_Block(width) for _ in range(BLOCKS)))
        self.out = nn.Conv3d(width, classes * (1 + factor**3), 1)
        self.smooth = AxisFilter(classes)
        self.classes, self.factor = classes, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.out(self.body(x))
        coarse, sub = h[:, : self.classes], h[:, self.classes :]
        return self.smooth(upsample(coarse, self.factor) + pixel_shuffle(sub, self.factor))


def build_head(params: dict, channels: int, classes: int, factor: int, heads: tuple[str, ...]) -> nn.Module:
    """A fresh head for ``params`` (``probe`` = linear | decoder)."""
    if params["probe"] == "linear":
        head = nn.Conv3d(channels, classes, 1)
        head.factor = 1
        return head
    if params["probe"] == "decoder":
        return ConvDecoder(channels, classes, params["width"], factor)
    raise ValueError(f"unknown segmentation head {params['probe']!r}; choose from {heads}")


def class_weights(freq: np.ndarray) -> torch.Tensor:
    """Inverse square-root class frequency over the valid training cells, capped at
    ``MAX_WEIGHT_RATIO`` times the commonest class's weight (stronger weights push boundaries
    into the rare classes); mean 1 over the classes present, 0 for classes never seen."""
    w = np.where(freq > 0, 1 / np.sqrt(np.maximum(freq, 1e-12) / max(freq.sum(), 1e-12)), 0.0)
    w = np.minimum(w, MAX_WEIGHT_RATIO * w[freq > 0].min())
    return torch.tensor(w / w[freq > 0].mean(), dtype=torch.float32)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over the batch's cases of Dice + cross-entropy on each case's valid cells.

    logits ``(B, K, *grid)``; target: soft ``(B, K, *grid)`` (zero on invalid cells) or hard
    labels ``(B, *grid)`` (integers, any value on invalid cells); valid ``(B, *grid)`` bool; weight ``(K,)``.
    """
    B, K = logits.shape[:2]
    logp = torch.log_softmax(logits.reshape(B, K, -1).float(), 1)
    mask = valid.reshape(B, 1, -1).to(logp.dtype)
    p = logp.exp() * mask
    if target.is_floating_point():
        t = target.reshape(B, K, -1).to(logp.dtype)
        tp, ts = (p * t).sum(-1), t.sum(-1)
        ce = -(weight[:, None] * t * logp).sum(1)
    else:
        lab = target.reshape(B, 1, -1).long().clamp_min(0)
        zeros = torch.zeros(B, K, dtype=p.dtype, device=p.device)
        tp = zeros.scatter_add(1, lab[:, 0], p.gather(1, lab)[:, 0])
        ts = zeros.scatter_add(1, lab[:, 0], mask[:, 0])
        ce = -(weight[lab[:, 0]] * logp.gather(1, lab)[:, 0])
    dice = 1 - (2 * tp + SMOOTH) / (p.sum(-1) + ts + SMOOTH)
    cells = mask[:, 0].sum(-1)
    ce = (ce * mask[:, 0]).sum(-1) / cells.clamp_min(1)
    return ((dice * weight).mean(1) + ce).mean()
