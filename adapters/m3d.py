"""ctbench adapter for M3D-CLIP (Bai et al., arXiv:2404.00578): the 3D ViT-B image encoder of the
CLIP model trained on M3D-Cap (Radiopaedia image-report pairs).

Cheap to import: torch and MONAI load when an encoder is built (the network classes are made on
first use by ``_classes``, since this module may not import torch at the top).

The network re-implements the MONAI 1.3 ``ViT`` the reference is written against (perceptron
patch embedding, learned position embedding added before the CLS token is prepended, pre-norm
blocks with a bias-free qkv, exact GELU MLP, final LayerNorm; SDPA attention, same function), so
its keys are those of ``pretrained_ViT.bin``: ``cls_token``,
``patch_embedding.patch_embeddings.1.*``, ``patch_embedding.position_embeddings``,
``blocks.{i}.{norm1,norm2}.*``, ``blocks.{i}.attn.qkv.weight``, ``blocks.{i}.attn.out_proj.*``,
``blocks.{i}.mlp.{linear1,linear2}.*``, ``norm.*``. The full CLIP file (``vision_encoder.``
prefix, plus ``mm_vision_proj``, ``mm_language_proj``, ``language_encoder.*``, ``logit_scale``)
loads too; only the vision encoder is kept.

Preprocessing (reference ``m3d_cap_data_prepare.py``; the model saw display-windowed 8-bit
slices stacked as (slice, row, col), min-max normalised, foreground-cropped, resized):
1. reorient to ``IPL`` axis codes: slices from superior to inferior (craniocaudal acquisition
   order), image rows anterior -> posterior, columns patient right -> left (radiological
   display). Training used random flips (p=0.1 per axis) and in-plane 90-degree rotations, so
   the model is only partly orientation-robust;
2. HU window (default soft tissue W400/L40 = [-160, 240] HU) mapped to [0, 1], as the display
   window of the 8-bit training images (/255). The reference then min-max normalises each
   volume; on CT that holds air and anything at or above the window top (bone) that is the
   identity, so by default we stop at the window and do not stretch volumes that lack them (a
   region's values then do not depend on the rest of the field of view). ``minmax=True`` adds
   the literal per-volume min-max;
3. crop to the bounding box of voxels > 0 (MONAI ``CropForeground``, as the reference);
4. trilinear resize to (32, 256, 256) (no spacing step, as the reference).

Features: ``embedding`` = CLS token after the final LayerNorm (768-d; ``mm_vision_proj`` of the
CLIP file is not applied); ``tokens`` = patch tokens ``(768, 8, 16, 16)`` along (slice, row, col).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence


from ctbench.card import InputSpec, ModelCard, ParityFacts, WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.types import Features
from ctbench.weights import resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from monai.data import MetaTensor

__all__ = ["CARD", "M3DEncoder", "build_network", "preprocess", "load_weights", "CONFIGS"]

NAME = "m3d"
ORIENTATION = "IPL"
DEFAULT_WINDOW = (-160.0, 240.0)
PREFIX = "vision_encoder."
IGNORED_PREFIXES = ("language_encoder.", "mm_vision_proj.", "mm_language_proj.", "logit_scale")
CONFIGS: dict[str, dict[str, Any]] = {
    "full": dict(in_channels=1, img_size=(32, 256, 256), patch_size=(4, 16, 16), hidden_size=768,
                 mlp_dim=3072, num_layers=12, num_heads=12),
    "test": dict(in_channels=1, img_size=(8, 64, 64), patch_size=(4, 16, 16), hidden_size=48,
                 mlp_dim=96, num_layers=2, num_heads=4),
}
VARIANTS = tuple(CONFIGS)

CARD = ModelCard(
    group="paper",
    name=NAME,
    title="M3D-CLIP: 3D ViT-B image encoder contrastively trained with radiology reports (M3D-Cap)",
    citation=(
        "Bai, F. et al. M3D: Advancing 3D Medical Image Analysis with Multi-Modal Large Language "
        "Models. arXiv:2404.00578 (2024)"
    ),
    licence="code MIT (BAAI-DCAI/M3D); model card Apache-2.0 (GoodBaiBai88/M3D-CLIP)",
    architecture=(
        "3D ViT-B (MONAI 1.3 ViT): 4x16x16 perceptron patch embedding (Linear 1024 -> 768), "
        "learned position embedding [1, 2048, 768], CLS token, 12 pre-norm blocks (12 heads, "
        "qkv without bias, MLP 3072 GELU), final LayerNorm"
    ),
    parameters=87_389_184,
    embedding_dim=768,
    token_dim=768,
    supervision="language",
    pretraining_datasets=("M3D-Cap",),
    input=InputSpec(
        orientation="IPL (slices superior -> inferior, rows anterior -> posterior, cols right -> left)",
        spacing_mm="none: the volume is resized to the fixed input size (as the reference)",
        hu_window=DEFAULT_WINDOW,
        intensity="HU window -> [0, 1] (the 8-bit display window / 255), crop to voxels > 0",
        spatial_size=CONFIGS["full"]["img_size"],
        axis_order="(B, 1, slice, row, col) = (B, 1, 32, 256, 256)",
    ),
    weights=WeightsSpec(
        hub_repo="GoodBaiBai88/M3D-CLIP",
        filename="pretrained_ViT.bin",
        revision=None,
        sha256=None,
        format="bin",
    ),
    parity=ParityFacts(
        reference="github.com/BAAI-DCAI/M3D",
        reference_version="63e72005a2304eda74579870239bfc7b04b0edae",
        fixture="m3d",
        tolerance=1e-5,
        measured=3.8e-7,
        checked="2026-12-05",
        scope=(
            "preprocessing at (32, 256, 256): bit-identical to m3d_cap_data_prepare.py's min-max + "
            "CropForeground + Resize, within the 8-bit step of its PNG-slice pipeline; LaMed ViT (MONAI "
            "1.3.2 blocks) at the test size: CLS embedding (tolerance and measured) + all patch tokens "
            "(3.3e-4, fp16 storage)"
        ),
    ),
)


@functools.lru_cache(maxsize=None)
def _classes() -> Any:
    """The torch network classes, defined on first use (keeps the module import torch-free)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PatchEmbedding(nn.Module):
        """``b c (d p1) (h p2) (w p3) -> b (d h w) (p1 p2 p3 c)`` -> Linear, + position table."""

        def __init__(self, in_channels: int, img_size: Sequence[int], patch_size: Sequence[int],
                     hidden_size: int) -> None:
            super().__init__()
            self.patch_size = tuple(patch_size)
            n = math.prod(i // p for i, p in zip(img_size, patch_size))
            self.patch_embeddings = nn.Sequential(
                nn.Identity(), nn.Linear(in_channels * math.prod(patch_size), hidden_size))
            self.position_embeddings = nn.Parameter(torch.zeros(1, n, hidden_size))
            nn.init.trunc_normal_(self.position_embeddings, std=0.02, a=-2.0, b=2.0)
            nn.init.trunc_normal_(self.patch_embeddings[1].weight, std=0.02, a=-2.0, b=2.0)
            nn.init.zeros_(self.patch_embeddings[1].bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, d, h, w = x.shape
            p1, p2, p3 = self.patch_size
            x = x.reshape(b, c, d // p1, p1, h // p2, p2, w // p3, p3)
            x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (d // p1) * (h // p2) * (w // p3), -1)
            return self.patch_embeddings(x) + self.position_embeddings

    class SABlock(nn.Module):
        def __init__(self, hidden_size: int, num_heads: int) -> None:
            super().__init__()
            self.num_heads = num_heads
            self.out_proj = nn.Linear(hidden_size, hidden_size)
            self.qkv = nn.Linear(hidden_size, hidden_size * 3, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, e = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v)
            return self.out_proj(out.transpose(1, 2).reshape(b, n, e))

    class MLPBlock(nn.Module):
        def __init__(self, hidden_size: int, mlp_dim: int) -> None:
            super().__init__()
            self.linear1 = nn.Linear(hidden_size, mlp_dim)
            self.linear2 = nn.Linear(mlp_dim, hidden_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear2(F.gelu(self.linear1(x)))

    class TransformerBlock(nn.Module):
        def __init__(self, hidden_size: int, mlp_dim: int, num_heads: int) -> None:
            super().__init__()
            self.mlp = MLPBlock(hidden_size, mlp_dim)
            self.norm1 = nn.LayerNorm(hidden_size)
            self.attn = SABlock(hidden_size, num_heads)
            self.norm2 = nn.LayerNorm(hidden_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class M3DViT(nn.Module):
        """Input ``(B, C, D, H, W)`` -> (CLS ``(B, E)``, token grid ``(B, D/p1, H/p2, W/p3, E)``)."""

        def __init__(self, in_channels: int, img_size: Sequence[int], patch_size: Sequence[int],
                     hidden_size: int, mlp_dim: int, num_layers: int, num_heads: int) -> None:
            super().__init__()
            self.img_size, self.patch_size = tuple(img_size), tuple(patch_size)
            self.patch_embedding = PatchEmbedding(in_channels, img_size, patch_size, hidden_size)
            self.blocks = nn.ModuleList(
                TransformerBlock(hidden_size, mlp_dim, num_heads) for _ in range(num_layers))
            self.norm = nn.LayerNorm(hidden_size)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if tuple(x.shape[2:]) != self.img_size:
                raise ValueError(f"M3D ViT input must be (B, C, {self.img_size}), got {tuple(x.shape)}")
            t = self.patch_embedding(x)
            t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
            for blk in self.blocks:
                t = blk(t)
            t = self.norm(t)
            grid = [i // p for i, p in zip(self.img_size, self.patch_size)]
            return t[:, 0], t[:, 1:].reshape(t.shape[0], *grid, t.shape[-1])

    return M3DViT


def build_network(variant: str = "full") -> "torch.nn.Module":
    """A randomly initialised M3D ViT (call under ``ctbench.weights.seeded_init``)."""
    return _classes()(**CONFIGS[variant])


def preprocess(volume: "MetaTensor", img_size: Sequence[int] = CONFIGS["full"]["img_size"],
               hu_window: tuple[float, float] = DEFAULT_WINDOW, minmax: bool = False) -> "MetaTensor":
    """Canonical volume -> network input ``(1, slice, row, col)`` float32 in [0, 1], a MetaTensor
    whose ``affine`` (tracked by MONAI) maps its index to world RAS mm."""
    from monai.transforms import CropForeground, Orientation, Resize, ScaleIntensity, ScaleIntensityRange

    from ctbench.adapters._common import preprocess as run

    lo, hi = hu_window
    ras = (("L", "R"), ("P", "A"), ("I", "S"))
    x = run(volume, [Orientation(axcodes=ORIENTATION, labels=ras),
                     ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
                     *([ScaleIntensity(minv=0.0, maxv=1.0)] if minmax else [])], NAME)
    steps = [CropForeground(allow_smaller=True)] if bool((x > 0).any()) else []
    return run(x, [*steps, Resize(spatial_size=tuple(img_size), mode="trilinear")], NAME)


def load_weights(model: "torch.nn.Module", path: str | Path) -> None:
    """Load ``pretrained_ViT.bin`` (or the full CLIP file) into ``model`` strictly."""
    from ctbench.adapters._common import load_strict, read_checkpoint, select_prefix

    state = select_prefix(read_checkpoint(path, NAME), PREFIX, IGNORED_PREFIXES, str(path))
    load_strict(model, state, str(path), NAME)


class M3DEncoder:
    """Frozen M3D-CLIP vision encoder: CLS embedding (768-d) and the patch-token grid."""

    card = CARD
    default_precision = "fp32"  # the official M3D-CLIP quick start runs in fp32

    def __init__(self, weights: str = "auto", device: str = "cpu", variant: str = "full",
                 *, hu_window: tuple[float, float] = DEFAULT_WINDOW, minmax: bool = False,
                 batch_size: int = 8, precision: str | None = None) -> None:
        import torch

        from ctbench.adapters._common import build_module, check_variant, resolve_precision

        check_variant("M3D", variant, VARIANTS, weights)
        self.precision = resolve_precision(precision, "m3d", self.default_precision)
        lo, hi = (float(v) for v in hu_window)
        if not hi > lo:
            raise CTBenchError(f"m3d: hu_window must be (low, high) with high > low, got {hu_window}")
        self.variant, self.hu_window, self.minmax, self.batch_size = variant, (lo, hi), minmax, batch_size
        self.config = CONFIGS[variant]
        self.embedding_dim = self.token_dim = self.config["hidden_size"]
        self.device = torch.device(device)
        self.weights_ref = resolve_weights(CARD, weights)
        self.model = build_module(self.weights_ref, lambda: build_network(variant), load_weights, self.device)
        self.autocast = self.precision == "bf16"
        self.preprocessing_id = CARD.preprocessing_hash({
            "variant": variant, "orientation": ORIENTATION, "hu_window": self.hu_window,
            "minmax": minmax, "crop_foreground": "> 0", "spatial_size": self.config["img_size"],
            "resize": "trilinear", "precision": self.precision,
        })

    def preprocess(self, volume: "MetaTensor") -> "MetaTensor":
        """Network input ``(1, slice, row, col)`` with its index -> world affine."""
        return preprocess(volume, self.config["img_size"], self.hu_window, self.minmax)

    def _forward(self, batch: list["MetaTensor"]) -> list[Features]:
        from ctbench.adapters._common import affine_of, run_batch, split_features, token_affine

        cls, grid = run_batch(self.model, batch, self.device, self.autocast)
        strides = self.config["patch_size"]
        affines = [token_affine(affine_of(v), strides) for v in batch]
        return split_features(cls, grid.permute(0, 4, 1, 2, 3), affines)

    def encode(self, volume: "MetaTensor") -> Features:
        return self._forward([self.preprocess(volume)])[0]

    def encode_batch(self, volumes: Sequence["MetaTensor"]) -> list[Features]:
        """Every input has the same fixed size, so volumes run ``batch_size`` at a time."""
        out: list[Features] = []
        for s in range(0, len(volumes), self.batch_size):
            out += self._forward([self.preprocess(v) for v in volumes[s:s + self.batch_size]])
        return out
