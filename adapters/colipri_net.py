"""COLIPRI image encoder re-implemented for inference in plain torch: a Primus (EVA-style) 3D ViT,
a 1x1x1 projection and an attention pool. Imported only when a ``colipri`` encoder is built.

Module and parameter names follow the official ``colipri`` package (0.1.3), whose image encoder is
``dynamic_network_architectures``' ``Primus`` (its decoder replaced by an identity) built from
timm's ``EvaBlock``, so the image part of the hub's ``model.safetensors`` loads with
``strict=True`` once its ``image_encoder.`` prefix is stripped:

- ``backbone.down_projection.proj``: Conv3d(1, E, 8, stride 8), the patch embedding;
- ``backbone.mask_token``: a (1, 1, E) buffer (used only for masked pre-training; kept so the key
  set matches);
- ``backbone.eva.blocks.{i}``: pre-norm blocks with LayerScale ``gamma_1`` / ``gamma_2``; attention
  with separate ``q_proj`` (bias), ``k_proj`` (no bias), ``v_proj`` (bias), 3D rotary position
  embedding on queries and keys, a LayerNorm on the attention output (``attn.norm``) before
  ``attn.proj``; SwiGLU MLP ``mlp.fc1_g`` / ``mlp.fc1_x`` (hidden ``int(E * 8 / 3)``), SiLU gate,
  LayerNorm ``mlp.norm``, ``mlp.fc2``; ``backbone.eva.norm`` at the end. LayerNorm eps 1e-5;
- ``projector``: Conv3d(E, P, 1); ``pooler.attn``: ``nn.MultiheadAttention(P, 12)`` whose single
  query is the mean of the projected tokens.

Rotary embedding (timm ``RotaryEmbeddingCat`` with ``in_pixels=False`` as ``Primus`` configures it):
frequencies ``1 / 10000 ** (k / n)`` for ``k < n = head_dim / 6``, one set per grid axis applied to
the integer token index (rescaled by ``ref / size``, the identity at the fixed input size),
sin and cos repeated pairwise and applied to interleaved pairs of the whole head dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ColipriConfig", "ColipriImageEncoder", "rope_tables", "build_network"]


@dataclass(frozen=True)
class ColipriConfig:
    """Architecture of the COLIPRI image encoder (``full`` = the published configuration)."""

    embed_dim: int = 864
    depth: int = 16
    num_heads: int = 12
    patch_size: int = 8
    input_size: int = 192
    projection_dim: int = 768
    pool_heads: int = 12
    layerscale_init: float = 0.1  # only the random control uses it; checkpoints carry gammas
    rope_temperature: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * (4 * 2 / 3))  # Primus' mlp_ratio, truncated as timm does

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.input_size // self.patch_size,) * 3


def rope_tables(grid: tuple[int, ...], head_dim: int, temperature: float = 10000.0,
                ref_grid: tuple[int, ...] | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos), each ``(prod(grid), head_dim)``, of the 3D rotary embedding over a token grid
    in raster order; ``ref_grid`` (default ``grid``) is the pre-training grid that positions are
    rescaled to."""
    rope_dim = head_dim / 1.5
    if rope_dim != int(rope_dim) or int(rope_dim) % 4:
        raise ValueError(f"head dim {head_dim} must be a multiple of 6 with head_dim / 1.5 divisible by 4")
    bands_n = int(rope_dim) // 4
    exponent = torch.arange(0, bands_n, 1, dtype=torch.int64, device=device).to(torch.float32) / bands_n
    bands = 1.0 / (temperature ** exponent)
    ref = tuple(ref_grid or grid)
    axes = [torch.arange(s, dtype=torch.int64, device=device).to(torch.float32) / s * r for s, r in zip(grid, ref)]
    pos = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1).unsqueeze(-1) * bands  # (*grid, 3, n)
    n = 1
    for s in grid:
        n *= s
    sin = pos.sin().reshape(n, -1).repeat_interleave(2, -1)
    cos = pos.cos().reshape(n, -1).repeat_interleave(2, -1)
    if sin.shape[-1] != head_dim:
        raise ValueError(f"rotary embedding covers {sin.shape[-1]} dims, head dim is {head_dim}")
    return sin, cos


def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """``[x0, x1, x2, x3, ...] -> [-x1, x0, -x3, x2, ...]`` (interleaved rotary layout)."""
    return torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)


class EvaAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (p(x).reshape(b, n, self.num_heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q = (q * cos + _rotate_pairs(q) * sin).type_as(v)
        k = (k * cos + _rotate_pairs(k) * sin).type_as(v)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(self.norm(out.transpose(1, 2).reshape(b, n, c)))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden)
        self.fc1_x = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(F.silu(self.fc1_g(x)) * self.fc1_x(x)))


class EvaBlock(nn.Module):
    def __init__(self, cfg: ColipriConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EvaAttention(dim, cfg.num_heads)
        self.gamma_1 = nn.Parameter(torch.full((dim,), cfg.layerscale_init))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwiGLU(dim, cfg.mlp_hidden)
        self.gamma_2 = nn.Parameter(torch.full((dim,), cfg.layerscale_init))

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma_1 * self.attn(self.norm1(x), sin, cos)
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ColipriConfig) -> None:
        super().__init__()
        self.proj = nn.Conv3d(1, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)


class Eva(nn.Module):
    def __init__(self, cfg: ColipriConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(EvaBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim)


class Primus(nn.Module):
    """Patch embedding + EVA blocks: ``(B, 1, X, Y, Z)`` -> token grid ``(B, E, X/8, Y/8, Z/8)``."""

    def __init__(self, cfg: ColipriConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.down_projection = PatchEmbed(cfg)
        self.eva = Eva(cfg)
        self.register_buffer("mask_token", torch.zeros(1, 1, cfg.embed_dim))
        self._rope: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def rope(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (str(device),)
        if key not in self._rope:  # computed, not a buffer: a meta-built module still gets real tables
            self._rope[key] = rope_tables(self.cfg.grid, self.cfg.head_dim, self.cfg.rope_temperature, device=device)
        return self._rope[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (self.cfg.input_size,) * 3
        if tuple(x.shape[2:]) != size:
            raise ValueError(f"COLIPRI input must be (B, 1, {size}) (its rotary table is fixed), got {tuple(x.shape)}")
        t = self.down_projection.proj(x)
        b, c, *grid = t.shape
        t = t.flatten(2).transpose(1, 2)
        sin, cos = self.rope(t.device)
        for blk in self.eva.blocks:
            t = blk(t, sin, cos)
        t = self.eva.norm(t)
        return t.transpose(1, 2).reshape(b, c, *grid)


class AttentionPool(nn.Module):
    """One query, the mean token, attending over all tokens (``nn.MultiheadAttention``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        query = seq.mean(dim=1, keepdim=True)
        return self.attn(query, seq, seq)[0][:, 0]


class ColipriImageEncoder(nn.Module):
    """``(B, 1, 192, 192, 192)`` -> (backbone tokens ``(B, E, 24, 24, 24)``, pooled projected
    embedding ``(B, P)``: ``encode_image(pool=True, project=True)`` of the official package)."""

    def __init__(self, cfg: ColipriConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Primus(cfg)
        self.projector = nn.Conv3d(cfg.embed_dim, cfg.projection_dim, kernel_size=1)
        self.pooler = AttentionPool(cfg.projection_dim, cfg.pool_heads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.backbone(x)
        projected = self.projector(tokens).flatten(2).transpose(1, 2)
        return tokens, self.pooler(projected)


def build_network(cfg: ColipriConfig) -> ColipriImageEncoder:
    """A randomly initialised image encoder (call under ``ctbench.weights.seeded_init``)."""
    return ColipriImageEncoder(cfg)
