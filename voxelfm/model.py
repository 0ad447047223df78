"""The VoxelFM backbone: a 3D ViT with 14^3 patches, register tokens and 3D RoPE.

Input ``(B, D, H, W)`` (no channel axis), D/H/W multiples of the patch size. Tokens are
``[CLS, registers, patches in (d, h, w) raster order]``; attention runs through
``scaled_dot_product_attention`` so the N x N matrix is never materialised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import VoxelFMConfig
from .rope import RopeEmbed3D, rotate_patch_tokens

__all__ = ["VoxelFM", "Attention", "Block"]


class PatchEmbed3D(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        x = self.proj(x.unsqueeze(1))  # (B, E, d, h, w)
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2), grid  # (B, d*h*w, E), raster (d, h, w)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, sin: Tensor, cos: Tensor, num_special: int) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        q = rotate_patch_tokens(q, sin, cos, num_special)
        k = rotate_patch_tokens(k, sin, cos, num_special)
        x = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual of a sample with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class Block(nn.Module):
    def __init__(self, cfg: VoxelFMConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads)
        self.ls1 = LayerScale(dim, cfg.layerscale) if cfg.layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, cfg.mlp_hidden_dim)
        self.ls2 = LayerScale(dim, cfg.layerscale) if cfg.layerscale else nn.Identity()
        self.drop_path_rate = drop_path_rate

    def forward(self, x: Tensor, sin: Tensor, cos: Tensor, num_special: int) -> Tensor:
        p, training = self.drop_path_rate, self.training
        x = x + drop_path(self.ls1(self.attn(self.norm1(x), sin, cos, num_special)), p, training)
        return x + drop_path(self.ls2(self.mlp(self.norm2(x))), p, training)


class VoxelFM(nn.Module):
    """VoxelFM backbone; ``VoxelFM(VoxelFMConfig.preset("base"))`` is the released ViT-B."""

    def __init__(self, config: VoxelFMConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or VoxelFMConfig()
        E = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.num_register_tokens
        self.patch_embed = PatchEmbed3D(cfg.patch_size, E)
        self.rope_embed = RopeEmbed3D(cfg.head_dim, cfg.rope_base)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, E))
        if cfg.drop_path_uniform:
            rates = [cfg.drop_path_rate] * cfg.depth
        else:
            rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(E, eps=cfg.norm_eps)
        self.mask_token = nn.Parameter(torch.zeros(1, E))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Linear: trunc_normal(0.02), bias 0; CLS/registers normal(1e-6); mask token 0.
        The patch-embedding Conv3d and LayerNorms keep PyTorch's defaults."""
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def num_special(self) -> int:
        return 1 + self.num_register_tokens

    def prepare_tokens(self, x: Tensor, masks: Tensor | None = None) -> tuple[Tensor, tuple[int, int, int]]:
        if x.ndim != 4:
            raise ValueError(f"VoxelFM expects (B, D, H, W) without a channel axis, got {tuple(x.shape)}")
        p = self.patch_size
        if any(s % p for s in x.shape[1:]):
            raise ValueError(
                f"VoxelFM input spatial size {tuple(x.shape[1:])} must be a multiple of the patch "
                f"size {p} on every axis (centre-crop it first)"
            )
        tokens, grid = self.patch_embed(x)
        if masks is not None:
            if masks.shape != tokens.shape[:2]:
                raise ValueError(f"masks must be (B, N) = {tuple(tokens.shape[:2])}, got {tuple(masks.shape)}")
            tokens = torch.where(masks.bool().unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        B = tokens.shape[0]
        special = torch.cat((self.cls_token, self.register_tokens), dim=1).expand(B, -1, -1)
        return torch.cat((special.to(tokens.dtype), tokens), dim=1), grid

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict:
        """Returns ``cls`` (B, E), ``registers`` (B, R, E), ``patch_tokens`` (B, N, E) - all
        after the final LayerNorm - plus ``prenorm`` (B, 1+R+N, E), ``grid`` (d, h, w) and
        ``masks``."""
        tokens, grid = self.prepare_tokens(x, masks)
        sin, cos = self.rope_embed(grid)
        ns = self.num_special
        for blk in self.blocks:
            tokens = blk(tokens, sin, cos, ns)
        normed = self.norm(tokens)
        return {
            "cls": normed[:, 0],
            "registers": normed[:, 1:ns],
            "patch_tokens": normed[:, ns:],
            "prenorm": tokens,
            "grid": grid,
            "masks": masks,
        }

    forward = forward_features
