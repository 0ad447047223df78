"""CT-CLIP image tower re-implemented for inference: CTViT encoder + vector quantiser + the CLIP
image projection. Imported only when a ``ct-clip`` encoder is built (it needs torch).

Module and parameter names follow the reference (CT-CLIP ``transformer_maskgit`` CTViT with
``vector-quantize-pytorch==1.1.2``) so the official ``CT-CLIP_v2.pt`` loads with ``strict=True``
after keeping its ``visual_transformer.*`` and ``to_visual_latent.weight`` entries. Unused
reference modules (first-frame embedding, pixel decoders) are kept so the key set matches.

Behaviour matched on purpose, quirks included:
- attention: queries come from the LayerNorm-ed input but keys/values from the *un-normalised*
  input; q and k are L2-normalised, multiplied by learned per-dim scales and by a fixed 8;
- the positional-encoding generator (PEG, depthwise 3^3 conv, causal padding on the frame axis)
  is applied before both transformers; in the temporal transformer the reference reshapes the
  ``((b h w), t, d)`` sequence straight into ``(b, t, h, w, d)`` without permuting, and so do we;
- spatial attention adds a continuous relative position bias (MLP on signed-log offsets);
- the quantiser returns the raw codebook row of the best cosine match (fp32); the tokens before
  it are available too (``CTViT.encode``), as an option for dense tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CTViTConfig", "CTViT", "CTCLIPImage", "build_network"]


@dataclass(frozen=True)
class CTViTConfig:
    """Architecture of the CT-CLIP image tower (``full`` = the published configuration)."""

    dim: int = 512
    codebook_size: int = 8192
    image_size: int = 480
    patch_size: int = 20
    temporal_patch_size: int = 10
    spatial_depth: int = 4
    temporal_depth: int = 4
    dim_head: int = 32
    heads: int = 8
    channels: int = 1
    dim_latent: int = 512

    @property
    def grid_hw(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def preset(cls, variant: str) -> "CTViTConfig":
        if variant == "full":
            return cls()
        if variant == "test":  # tiny tower for CPU tests; same code path
            return cls(dim=32, codebook_size=64, image_size=80, spatial_depth=1, temporal_depth=1,
                       dim_head=8, heads=2)
        raise ValueError(f"unknown variant {variant!r}")


class BiaslessLayerNorm(nn.Module):
    """LayerNorm with a learned gain and a fixed zero bias kept as a (persistent) buffer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class PEG(nn.Module):
    """Depthwise 3x3x3 conv over a (frames, h, w) grid, causal (2, 0) padding on frames."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dsconv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
        grid = x.reshape(*shape, -1).permute(0, 4, 1, 2, 3)
        grid = self.dsconv(F.pad(grid, (1, 1, 1, 1, 2, 0)))
        return grid.permute(0, 2, 3, 4, 1).reshape(x.shape)


class Attention(nn.Module):
    """Cosine-sim self-attention (fixed scale 8) with zero null key/values."""

    def __init__(self, dim: int, dim_head: int, heads: int, scale: float = 8.0) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads, self.scale = heads, scale
        self.norm = BiaslessLayerNorm(dim)
        self.context_norm = BiaslessLayerNorm(dim)  # unused (no cross-attention); in the file
        self.null_kv = nn.Parameter(torch.empty(heads, 0, dim_head))  # num_null_kv = 0
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(x).chunk(2, dim=-1)  # keys/values from the un-normalised input
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """LayerNorm -> Linear (no bias) -> GEGLU -> Linear (no bias); inner width int(mult*2/3*dim)."""
    inner = int(mult * (2 / 3) * dim)
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, inner * 2, bias=False), GEGLU(), nn.Identity(),
        nn.Linear(inner, dim, bias=False),
    )


class Transformer(nn.Module):
    """Blocks of [PEG, self-attention, (no cross-attention), feed-forward], then a final norm."""

    def __init__(self, dim: int, depth: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PEG(dim), Attention(dim, dim_head, heads), None, feed_forward(dim)])
            for _ in range(depth)
        )
        self.norm_out = BiaslessLayerNorm(dim)

    def forward(self, x: torch.Tensor, shape: tuple[int, int, int, int],
                attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        for peg, attn, _, ff in self.layers:
            x = peg(x, shape) + x
            x = attn(x, attn_bias) + x
            x = ff(x) + x
        return self.norm_out(x)


class ContinuousPositionBias(nn.Module):
    """Per-head bias from an MLP on signed log(1 + |offset|) between 2D token positions."""

    def __init__(self, dim: int, heads: int, layers: int = 2) -> None:
        super().__init__()
        self.net = nn.ModuleList([nn.Sequential(nn.Linear(2, dim), nn.LeakyReLU(0.1))])
        for _ in range(layers - 1):
            self.net.append(nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1)))
        self.net.append(nn.Linear(dim, heads))

    def forward(self, h: int, w: int) -> torch.Tensor:
        """Bias ``(heads, h*w, h*w)`` between raster-ordered tokens (query i, key j).

        The MLP runs once per distinct offset ((2h-1)(2w-1) rows, not (hw)^2): same values as
        evaluating it on every pair, at a fraction of the cost (87 GFLOP -> 0.6 at 24x24)."""
        device = self.net[-1].weight.device
        dy, dx = torch.arange(1 - h, h, device=device), torch.arange(1 - w, w, device=device)
        offsets = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2).float()
        table = torch.sign(offsets) * torch.log(offsets.abs() + 1)
        with torch.autocast(device_type=device.type, enabled=False):
            for layer in self.net:
                table = layer(table)
        y, x = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        y, x = y.reshape(-1), x.reshape(-1)
        index = (y[:, None] - y[None, :] + h - 1) * (2 * w - 1) + (x[:, None] - x[None, :] + w - 1)
        return table[index].permute(2, 0, 1)


class CosineCodebook(nn.Module):
    """Codebook buffers of vector-quantize-pytorch 1.1.2 ``CosineSimCodebook``."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.register_buffer("initted", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(1, size))
        embed = torch.empty(1, size, dim)
        nn.init.kaiming_uniform_(embed)
        self.register_buffer("embed", F.normalize(embed, dim=-1))


class VectorQuantize(nn.Module):
    """Inference-only cosine-similarity VQ: each token becomes its best codebook row (fp32)."""

    def __init__(self, dim: int, codebook_size: int, chunk: int = 4096) -> None:
        super().__init__()
        self._codebook = CosineCodebook(dim, codebook_size)
        self.chunk = chunk

    def indices(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the best cosine match in the codebook for every token of ``x`` (``(..., dim)``
        -> ``(...)``), computed in fp32 whatever the autocast state."""
        embed = self._codebook.embed[0].float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            unit = F.normalize(embed, dim=-1)
            flat = F.normalize(x.reshape(-1, x.shape[-1]).float(), dim=-1)
            idx = torch.cat([(part @ unit.T).argmax(dim=-1) for part in flat.split(self.chunk)])
        return idx.reshape(x.shape[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed = self._codebook.embed[0].float()
        return embed[self.indices(x)]


def _embedding(in_dim: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Identity(), nn.LayerNorm(in_dim), nn.Linear(in_dim, dim), nn.LayerNorm(dim))


class CTViT(nn.Module):
    """CTViT encoder: video ``(B, C, F, H, W)`` -> quantised tokens ``(B, F/pt, H/p, W/p, dim)``."""

    def __init__(self, cfg: CTViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p, pt, c, d = cfg.patch_size, cfg.temporal_patch_size, cfg.channels, cfg.dim
        self.spatial_rel_pos_bias = ContinuousPositionBias(d, cfg.heads)
        self.to_patch_emb_first_frame = _embedding(c * p * p, d)  # unused; in the file
        self.to_patch_emb = _embedding(c * pt * p * p, d)
        self.enc_spatial_transformer = Transformer(d, cfg.spatial_depth, cfg.dim_head, cfg.heads)
        self.enc_temporal_transformer = Transformer(d, cfg.temporal_depth, cfg.dim_head, cfg.heads)
        self.vq = VectorQuantize(d, cfg.codebook_size)
        self.to_pixels_first_frame = nn.Sequential(nn.Linear(d, c * p * p), nn.Identity())  # unused
        self.to_pixels = nn.Sequential(nn.Linear(d, c * pt * p * p), nn.Identity())  # unused

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """``b c (t pt) (h p) (w p) -> b t h w (c pt p p)``."""
        b, c, f, hh, ww = video.shape
        p, pt = self.cfg.patch_size, self.cfg.temporal_patch_size
        if f % pt or hh != self.cfg.image_size or ww != self.cfg.image_size:
            raise ValueError(f"CTViT input must be (B, C, k*{pt}, {self.cfg.image_size}, "
                             f"{self.cfg.image_size}), got {tuple(video.shape)}")
        x = video.reshape(b, c, f // pt, pt, hh // p, p, ww // p, p)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, f // pt, hh // p, ww // p, -1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Quantised tokens (what the reference encoder returns)."""
        return self.vq(self.encode(video))

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, t, h, w, dim)`` after the temporal transformer, before quantisation."""
        tokens = self.to_patch_emb(self.patchify(video))
        b, t, h, w, d = tokens.shape
        shape = (b, t, h, w)
        x = self.enc_spatial_transformer(tokens.reshape(b * t, h * w, d), shape,
                                         attn_bias=self.spatial_rel_pos_bias(h, w))
        x = x.reshape(b, t, h, w, d).permute(0, 2, 3, 1, 4).reshape(b * h * w, t, d)
        x = self.enc_temporal_transformer(x, shape)
        return x.reshape(b, h, w, t, d).permute(0, 3, 1, 2, 4)


class CTCLIPImage(nn.Module):
    """The image side of CT-CLIP: quantised CTViT tokens and the 512-d L2-normalised latent
    (mean over frames -> flatten (h, w, d) -> ``to_visual_latent``).

    ``pre_quantisation=True`` returns the tokens before the vector quantiser instead (not what
    the reference returns; they keep local detail that the codebook snap loses); the latent is
    always the reference's, from the quantised tokens."""

    def __init__(self, cfg: CTViTConfig, pre_quantisation: bool = False) -> None:
        super().__init__()
        self.visual_transformer = CTViT(cfg)
        self.to_visual_latent = nn.Linear(cfg.grid_hw**2 * cfg.dim, cfg.dim_latent, bias=False)
        self.pre_quantisation = pre_quantisation

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.visual_transformer.encode(video)
        tokens = self.visual_transformer.vq(raw)
        pooled = tokens.mean(dim=1).reshape(tokens.shape[0], -1)
        latent = F.normalize(self.to_visual_latent(pooled.to(self.to_visual_latent.weight.dtype)), dim=-1)
        return latent, (raw if self.pre_quantisation else tokens)


def build_network(variant: str = "full", pre_quantisation: bool = False) -> CTCLIPImage:
    """A randomly initialised image tower (call under ``ctbench.weights.seeded_init``)."""
    return CTCLIPImage(CTViTConfig.preset(variant), pre_quantisation)
