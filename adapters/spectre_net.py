"""The SPECTRE network (Claessens et al., CVPR 2026): a 3D ViT over fixed-size CT crops (the
"local" backbone) and a transformer "feature combiner" over the grid of crop features (the
"global" model), with the module and parameter names of the official ``spectre-fm`` package, so
its checkpoints load strictly.

Backbone keys (``spectre_backbone_vit_large_patch16_128.pt``): ``cls_token``,
``patch_embed.proj.{weight,bias}``, ``rope.periods``, ``blocks.{i}.{norm1,norm2}.*``,
``blocks.{i}.attn.{q,kv,proj}.*``, ``blocks.{i}.{ls1,ls2}.gamma``, ``blocks.{i}.mlp.{fc1,fc2}.*``,
``norm.*``. Combiner keys (``spectre_combiner_feature_vit_large.pt``): the same with
``patch_proj.*`` in place of ``patch_embed``. Together (``SpectreNet``) they sit under
``backbone.`` and ``feature_combiner.``, as in the official ``SpectreImageFeatureExtractor``.

Both transformers: pre-norm blocks (LayerNorm eps 1e-5, separate ``q`` and ``kv`` projections
with bias, LayerScale, exact-GELU MLP 4x), a CLS token, no absolute position embedding, and an
axial 3D rotary embedding on the non-CLS tokens: per head, ``head_dim / 6`` periods
``base ** (2 k / (head_dim / 3))`` per axis, coordinates ``2 (i + 0.5) / n - 1`` per axis.
Crops, patches and crop grids are ordered (H, W, D) = (R, A, S) of the RAS input, D fastest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import LayerScale, Mlp
from torch import nn

__all__ = ["SpectreArch", "RotaryEmbedding3d", "CropViT", "FeatureCombiner", "SpectreNet", "grid_patch"]


@dataclass(frozen=True)
class SpectreArch:
    """Sizes of one SPECTRE configuration (backbone + feature combiner)."""

    crop_size: tuple[int, int, int]
    patch_size: tuple[int, int, int]
    embed_dim: int
    depth: int
    num_heads: int
    combiner_dim: int
    combiner_depth: int
    combiner_heads: int
    backbone_rope_base: float = 1000.0
    combiner_rope_base: float = 100.0
    init_values: float = 1.0
    mlp_ratio: float = 4.0


class RotaryEmbedding3d(nn.Module):
    """Axial 3D RoPE: ``(sin, cos)`` of shape ``(H*W*D, head_dim)`` for an (H, W, D) token grid.

    ``periods`` is a persistent buffer (it is in the official checkpoints), set here from
    ``base`` for a randomly initialised network and overwritten by a loaded file."""

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        if head_dim % 6:
            raise ValueError(f"3D RoPE needs head_dim divisible by 6, got {head_dim}")
        k = torch.arange(head_dim // 6, dtype=torch.float32)
        self.register_buffer("periods", base ** (2 * k / (head_dim // 3)), persistent=True)

    def forward(self, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        dd = dict(device=self.periods.device, dtype=torch.float32)
        axes = [torch.arange(0.5, n, **dd) / n for n in grid]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).flatten(0, 2)
        coords = 2.0 * coords - 1.0  # [-1, 1] per axis
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        return torch.sin(angles), torch.cos(angles)


def _rotate(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    """Multi-head self-attention with ``q`` / ``kv`` projections; RoPE on the tokens after the
    prefix (CLS), applied in float32."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        sin, cos = rope
        prefix = n - sin.shape[0]
        dtype = q.dtype
        q, k = q.float(), k.float()
        q = torch.cat([q[:, :, :prefix], _rotate(q[:, :, prefix:], sin, cos)], dim=2).to(dtype)
        k = torch.cat([k[:, :, :prefix], _rotate(k[:, :, prefix:], sin, cos)], dim=2).to(dtype)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, init_values: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values=init_values)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.ls2 = LayerScale(dim, init_values=init_values)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _Transformer(nn.Module):
    """CLS token + RoPE blocks + final norm, shared by the backbone and the combiner."""

    def __init__(self, dim: int, depth: int, num_heads: int, rope_base: float, mlp_ratio: float,
                 init_values: float) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.rope = RotaryEmbedding3d(dim // num_heads, rope_base)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, init_values) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def _run(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        rope = self.rope(grid)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x, rope)
        return self.norm(x)


class PatchEmbed3d(nn.Module):
    """Non-overlapping 3D patches -> tokens (a strided Conv3d), in (H, W, D) raster order."""

    def __init__(self, patch_size: tuple[int, int, int], dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(1, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class CropViT(_Transformer):
    """The local backbone: one crop ``(M, 1, cH, cW, cD)`` -> tokens ``(M, 1 + n, dim)``."""

    def __init__(self, arch: SpectreArch) -> None:
        super().__init__(arch.embed_dim, arch.depth, arch.num_heads, arch.backbone_rope_base, arch.mlp_ratio,
                         arch.init_values)
        self.crop_size, self.patch_size = arch.crop_size, arch.patch_size
        self.patch_embed = PatchEmbed3d(arch.patch_size, arch.embed_dim)  # PyTorch's default Conv3d init

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(crops)
        grid = tuple(t.shape[2:])
        return self._run(t.flatten(2).transpose(1, 2), grid)  # type: ignore[arg-type]


class FeatureCombiner(_Transformer):
    """The global model: per-crop features ``(B, N, patch_dim)`` on an (nH, nW, nD) grid ->
    ``(B, 1 + N, dim)`` (CLS first, then one token per crop)."""

    def __init__(self, arch: SpectreArch, patch_dim: int) -> None:
        super().__init__(arch.combiner_dim, arch.combiner_depth, arch.combiner_heads, arch.combiner_rope_base,
                         arch.mlp_ratio, arch.init_values)
        self.patch_proj = nn.Linear(patch_dim, arch.combiner_dim)
        nn.init.trunc_normal_(self.patch_proj.weight, std=0.02)
        nn.init.zeros_(self.patch_proj.bias)

    def forward(self, feats: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        return self._run(self.patch_proj(feats), grid)


def grid_patch(x: torch.Tensor, crop: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``(B, 1, H, W, D)`` (each axis a multiple of ``crop``) -> crops ``(B, N, 1, cH, cW, cD)``
    with crop ``n = (h * nW + w) * nD + d``, and the grid ``(nH, nW, nD)``."""
    b, c = x.shape[:2]
    grid = tuple(s // k for s, k in zip(x.shape[2:], crop))
    (nh, nw, nd), (ch, cw, cd) = grid, crop
    crops = x.reshape(b, c, nh, ch, nw, cw, nd, cd).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return crops.reshape(b, nh * nw * nd, c, ch, cw, cd), grid  # type: ignore[return-value]


class SpectreNet(nn.Module):
    """Backbone + feature combiner: a crop-tiled volume -> (scan CLS, per-crop tokens).

    Each crop's backbone output is pooled to ``[CLS, mean of patch tokens]`` (2 x dim), the
    combiner's input; its CLS row is the scan embedding and its other rows the crop tokens."""

    def __init__(self, arch: SpectreArch) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = CropViT(arch)
        self.feature_combiner = FeatureCombiner(arch, patch_dim=2 * arch.embed_dim)

    def crop_features(self, crops: torch.Tensor, chunk: int) -> torch.Tensor:
        """``(M, 1, cH, cW, cD)`` -> pooled ``(M, 2 * dim)``, ``chunk`` crops per backbone pass."""
        out = []
        for part in torch.split(crops, max(1, chunk), dim=0):
            t = self.backbone(part)
            out.append(torch.cat([t[:, 0], t[:, 1:].mean(dim=1)], dim=-1))
        return torch.cat(out, dim=0)

    def forward(self, x: torch.Tensor, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, H, W, D)`` -> embedding ``(B, E)`` and tokens ``(B, E, nH, nW, nD)``."""
        crops, grid = grid_patch(x, self.arch.crop_size)
        b, n = crops.shape[:2]
        pooled = self.crop_features(crops.flatten(0, 1), chunk).reshape(b, n, -1)
        out = self.feature_combiner(pooled, grid)
        tokens = out[:, 1:].reshape(b, *grid, out.shape[-1]).permute(0, 4, 1, 2, 3)
        return out[:, 0], tokens
