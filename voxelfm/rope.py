"""3D rotary position embedding of the VoxelFM backbone.

Each head's ``head_dim = 6F`` channels are three contiguous blocks ``[z | y | x]`` of ``2F``
channels; inside a block the adjacent pair ``(2j, 2j + 1)`` is rotated by the angle
``2*pi*coord/periods[j]`` (mod 2*pi) of that block's axis, where ``coord`` is the token centre
normalised to [-1, 1] by that axis' own token count. Only patch tokens are rotated.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["RopeEmbed3D", "rope_coords", "apply_rope", "rotate_patch_tokens"]


def rope_coords(grid: tuple[int, int, int], device=None) -> Tensor:
    """Token-centre coordinates in [-1, 1], shape ``(d*h*w, 3)`` in (z, y, x) raster order."""
    axes = [(torch.arange(0.5, n, device=device, dtype=torch.float32) / n) * 2.0 - 1.0 for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


class RopeEmbed3D(nn.Module):
    """Holds the ``periods`` buffer (in the state_dict) and makes sin/cos for a token grid."""

    periods: Tensor

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        if head_dim % 6:
            raise ValueError(f"head_dim {head_dim} must be divisible by 6")
        n_freqs = head_dim // 6
        exponents = 2.0 * torch.arange(n_freqs, dtype=torch.float32) / (2 * n_freqs)
        self.register_buffer("periods", base**exponents, persistent=True)

    def forward(self, grid: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        """``(sin, cos)``, each float32 ``(N, 3, F)`` for the ``(d, h, w)`` token grid."""
        coords = rope_coords(grid, device=self.periods.device)
        periods = self.periods.float()
        angles = torch.remainder(2.0 * math.pi * coords[:, :, None] / periods, 2.0 * math.pi)
        return torch.sin(angles), torch.cos(angles)


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate ``x`` ``(..., N, 6F)`` with per-token ``sin``/``cos`` ``(N, 3, F)``."""
    *lead, n, dim = x.shape
    pairs = x.reshape(*lead, n, 3, dim // 6, 2)
    even, odd = pairs.unbind(-1)
    sin, cos = sin.to(x.dtype), cos.to(x.dtype)
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.reshape(*lead, n, dim)


def rotate_patch_tokens(x: Tensor, sin: Tensor, cos: Tensor, num_special: int) -> Tensor:
    """Apply RoPE to tokens ``num_special:`` of ``x`` ``(B, heads, N_total, head_dim)``,
    leaving the leading CLS/register tokens untouched."""
    special, patches = x[..., :num_special, :], x[..., num_special:, :]
    return torch.cat((special, apply_rope(patches, sin, cos)), dim=-2)
