"""ctbench adapter for RadFM (Wu et al., arXiv:2308.02463): the 3D ViT vision encoder of the RadFM
multimodal LLM, pre-trained on MedMD and fine-tuned on RadMD through the language model.

Cheap to import: torch and MONAI load when an encoder is built (the network class is made on first
use by ``_classes``, since this module may not import torch at the top).

Network (reference ``Model/RadFM/vit_3d.py`` + ``position_encoding.py``; SDPA attention, same
function): patches of 32 x 32 (row, col) x 4 (slice) x 3 channels -> LayerNorm -> Linear ->
LayerNorm (``to_patch_embedding.{1,2,3}``); position embedding = concatenation of three learned
tables ``pos_embedding.{row,col,dep}_embed`` (16, 16 and 128 rows of 256), the depth table
indexed ``(k + 1) * (128 // d) - 1`` for ``d`` depth tokens; 12 pre-norm blocks
(``transformer.layers.{i}.0.norm``, ``.0.fn.to_qkv`` without bias, ``.0.fn.to_out.0``,
``.1.norm``, ``.1.fn.net.{0,3}``; 8 heads x 64, MLP 2048 GELU); no CLS token, no final norm.

Weights: the published file (``pytorch_model.bin`` inside the ~50 GB archive of HF
``chaoyi-wu/RadFM``) holds the LLM too; ``ctbench weights extract radfm FILE`` keeps the vision
encoder in ``$CTBENCH_HOME/weights/radfm/radfm_vision.safetensors``. Keys may keep the
``embedding_layer.vision_encoder.`` prefix or have it stripped; both load.

Preprocessing (reference data pipeline: 8-bit display-windowed slices, in-plane resize to 512 with
bilinear interpolation, per-volume min-max, depth resized with nearest neighbour to the multiple
of 4 nearest the slice count, at most 64; grey repeated to 3 channels):
1. reorient to ``PLI`` axis codes: rows anterior -> posterior, columns patient right -> left
   (radiological display), slices superior -> inferior;
2. HU window (default soft tissue W400/L40 = [-160, 240]) -> [0, 1] (the display window of the
   8-bit images). The reference min-max normalises each volume; on CT that holds air and
   anything at or above the window top (bone) that is the identity, so by default we stop at
   the window (``minmax=True`` adds the literal per-volume min-max);
3. trilinear resize of rows and columns to 512 (slice positions unchanged, so this is the
   reference's bilinear in-plane resize);
4. depth -> the multiple of 4 in [4, 64] nearest the slice count (ties to the smaller), nearest
   neighbour. We use ``nearest-exact`` (centre-aligned, so the tracked affine is exact); the
   reference's legacy ``nearest`` picks the slice at each output slice's leading edge instead,
   which can differ by one source slice.

Features: ``embedding`` = mean of the patch tokens (768-d; RadFM has no pooled output);
``tokens`` = ``(768, 16, 16, D/4)`` along (row, col, slice).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence


from ctbench.card import InputSpec, ModelCard, ParityFacts, WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.types import Features
from ctbench.weights import cached_weights_path, resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from monai.data import MetaTensor

__all__ = ["CARD", "RadFMEncoder", "build_network", "preprocess", "load_weights", "target_depth",
           "CONFIGS"]

NAME = "radfm"
ORIENTATION = "PLI"
DEFAULT_WINDOW = (-160.0, 240.0)
PREFIX = "embedding_layer.vision_encoder."
# Other parts of the full RadFM file (LLM, perceiver, BERT, segmentation heads).
IGNORED_PREFIXES = ("lang_model.", "embedding_layer.")
CONFIGS: dict[str, dict[str, Any]] = {
    "full": dict(image_size=512, image_patch_size=32, frames=512, frame_patch_size=4, dim=768,
                 depth=12, heads=8, dim_head=64, mlp_dim=2048, channels=3, max_depth=64),
    "test": dict(image_size=64, image_patch_size=32, frames=64, frame_patch_size=4, dim=48,
                 depth=2, heads=2, dim_head=16, mlp_dim=64, channels=3, max_depth=16),
}
VARIANTS = tuple(CONFIGS)

CARD = ModelCard(
    group="paper",
    name=NAME,
    title="RadFM: 3D ViT vision encoder of a radiology multimodal LLM (MedMD / RadMD)",
    citation=(
        "Wu, C. et al. Towards Generalist Foundation Model for Radiology by Leveraging Web-scale "
        "2D&3D Medical Data. arXiv:2308.02463 (2023)"
    ),
    licence="UNKNOWN: neither the reference repository nor the weights state a licence",
    architecture=(
        "3D ViT (lucidrains style): 32x32x4 patches of 3 channels, LayerNorm-Linear-LayerNorm "
        "embedding (12288 -> 768), learned row/col/depth position tables (3 x 256), 12 pre-norm "
        "blocks (8 heads x 64, qkv without bias, MLP 2048 GELU), no CLS token, no final norm"
    ),
    parameters=66_208_000,
    embedding_dim=768,
    token_dim=768,
    supervision="language",
    pretraining_datasets=("MedMD", "RadMD"),
    input=InputSpec(
        orientation="PLI (rows anterior -> posterior, cols right -> left, slices superior -> inferior)",
        spacing_mm="none: rows/cols resized to 512, depth to the multiple of 4 nearest the slice "
                   "count (<= 64)",
        hu_window=DEFAULT_WINDOW,
        intensity="HU window -> [0, 1] (the 8-bit display window / 255), grey repeated to 3 channels",
        spatial_size="512 x 512 x D, D in {4, 8, ..., 64}",
        axis_order="(B, 3, row, col, slice) = (B, 3, 512, 512, D)",
    ),
    weights=WeightsSpec(
        hub_repo="chaoyi-wu/RadFM",
        filename="radfm_vision.safetensors",
        revision=None,
        sha256=None,
        format="safetensors",
    ),
    parity=ParityFacts(
        reference="github.com/chaoyi-wu/RadFM",
        reference_version="9efba84cced9ffdcbce00d6005f255414ffa8c36",
        fixture="radfm",
        tolerance=1e-5,
        measured=3.5e-7,
        checked="2026-12-05",
        scope=(
            "preprocessing at 512 x 512 x 36 (1.2e-7; min-max and stack_images of multi_dataset.py after "
            "cv2 bilinear in-plane resizing); vit_3d.py ViT at the test size: mean-token embedding "
            "(tolerance and measured) + all patch tokens (3.1e-4, fp16 storage)"
        ),
    ),
)


def target_depth(slices: int, max_depth: int = 64) -> int:
    """The multiple of 4 in [4, max_depth] nearest ``slices`` (ties to the smaller), as RadFM."""
    best = 4
    for d in range(4, max_depth + 1, 4):
        if abs(d - slices) < abs(best - slices):
            best = d
    return best


@functools.lru_cache(maxsize=None)
def _classes() -> Any:
    """The torch network class, defined on first use (keeps the module import torch-free)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PositionEmbedding3d(nn.Module):
        def __init__(self, feats: int, h: int, w: int, d: int) -> None:
            super().__init__()
            self.h_patch_num, self.w_patch_num, self.d_patch_num = h, w, d
            self.row_embed = nn.Embedding(h, feats)
            self.col_embed = nn.Embedding(w, feats)
            self.dep_embed = nn.Embedding(d, feats)
            for table in (self.row_embed, self.col_embed, self.dep_embed):
                nn.init.uniform_(table.weight)

        def forward(self, h: int, w: int, d: int) -> torch.Tensor:
            """``(h*w*d, 3*feats)`` in (h, w, d) raster order."""
            dev = self.row_embed.weight.device
            idx = [(torch.arange(n, device=dev) + 1) * (total // n) - 1
                   for n, total in ((h, self.h_patch_num), (w, self.w_patch_num), (d, self.d_patch_num))]
            r, c, k = self.row_embed(idx[0]), self.col_embed(idx[1]), self.dep_embed(idx[2])
            f = r.shape[-1]
            pos = torch.cat([r[:, None, None].expand(h, w, d, f), c[None, :, None].expand(h, w, d, f),
                             k[None, None, :].expand(h, w, d, f)], dim=-1)
            return pos.reshape(h * w * d, -1)

    class PreNorm(nn.Module):
        def __init__(self, dim: int, fn: nn.Module) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.fn = fn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fn(self.norm(x))

    class Attention(nn.Module):
        def __init__(self, dim: int, heads: int, dim_head: int) -> None:
            super().__init__()
            self.heads = heads
            self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
            self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Identity())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, _ = x.shape
            q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2)
                       for t in self.to_qkv(x).chunk(3, dim=-1))
            out = F.scaled_dot_product_attention(q, k, v)
            return self.to_out(out.transpose(1, 2).reshape(b, n, -1))

    class FeedForward(nn.Module):
        def __init__(self, dim: int, hidden: int) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim),
                                     nn.Identity())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    class Transformer(nn.Module):
        def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int) -> None:
            super().__init__()
            self.layers = nn.ModuleList(
                nn.ModuleList([PreNorm(dim, Attention(dim, heads, dim_head)),
                               PreNorm(dim, FeedForward(dim, mlp_dim))])
                for _ in range(depth))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for attn, ff in self.layers:
                x = attn(x) + x
                x = ff(x) + x
            return x

    class RadFMViT(nn.Module):
        """Input ``(B, 3, H, W, D)`` -> token grid ``(B, H/32, W/32, D/4, dim)``."""

        def __init__(self, image_size: int, image_patch_size: int, frames: int, frame_patch_size: int,
                     dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, channels: int,
                     max_depth: int) -> None:
            super().__init__()
            self.image_size, self.max_depth = image_size, max_depth
            self.patch, self.frame_patch = image_patch_size, frame_patch_size
            patch_dim = channels * image_patch_size**2 * frame_patch_size
            self.to_patch_embedding = nn.Sequential(
                nn.Identity(), nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim))
            n = image_size // image_patch_size
            self.pos_embedding = PositionEmbedding3d(dim // 3, n, n, frames // frame_patch_size)
            self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, hh, ww, dd = x.shape
            p, pf = self.patch, self.frame_patch
            if hh != self.image_size or ww != self.image_size or dd % pf or dd > self.max_depth:
                raise ValueError(f"RadFM input must be (B, 3, {self.image_size}, {self.image_size}, "
                                 f"k*{pf} <= {self.max_depth}), got {tuple(x.shape)}")
            h, w, d = hh // p, ww // p, dd // pf
            t = x.reshape(b, c, h, p, w, p, d, pf).permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, h * w * d, -1)
            t = self.to_patch_embedding(t) + self.pos_embedding(h, w, d)
            return self.transformer(t).reshape(b, h, w, d, -1)

    return RadFMViT


def build_network(variant: str = "full") -> "torch.nn.Module":
    """A randomly initialised RadFM ViT (call under ``ctbench.weights.seeded_init``)."""
    return _classes()(**CONFIGS[variant])


def preprocess(volume: "MetaTensor", image_size: int = 512, max_depth: int = 64,
               hu_window: tuple[float, float] = DEFAULT_WINDOW, minmax: bool = False) -> "MetaTensor":
    """Canonical volume -> network input ``(1, row, col, slice)`` float32 in [0, 1] (the forward
    repeats it to 3 channels), a MetaTensor whose ``affine`` (tracked by MONAI) maps its index to
    world RAS mm."""
    from monai.transforms import Orientation, Resize, ScaleIntensity, ScaleIntensityRange

    from ctbench.adapters._common import preprocess as run

    lo, hi = hu_window
    ras = (("L", "R"), ("P", "A"), ("I", "S"))
    x = run(volume, [Orientation(axcodes=ORIENTATION, labels=ras),
                     ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
                     Resize(spatial_size=(image_size, image_size, -1), mode="trilinear"),
                     *([ScaleIntensity(minv=0.0, maxv=1.0)] if minmax else [])], NAME)
    depth = target_depth(x.shape[-1], max_depth)
    if depth != x.shape[-1]:
        x = run(x, [Resize(spatial_size=(-1, -1, depth), mode="nearest-exact")], NAME)
    return x


def load_weights(model: "torch.nn.Module", path: str | Path) -> None:
    """Load the extracted vision-encoder file (prefixed or stripped keys) into ``model`` strictly."""
    from ctbench.adapters._common import load_strict, read_checkpoint, select_prefix

    state = select_prefix(read_checkpoint(path, NAME), PREFIX, IGNORED_PREFIXES, str(path))
    load_strict(model, state, str(path), NAME)


def _resolve(weights: str):
    """``resolve_weights`` for RadFM: ``auto`` only looks in the local cache (the hub holds a
    ~50 GB archive, not a vision-only file) and says how to make that file."""
    if str(weights) == "auto":
        local = cached_weights_path(CARD)
        if local is None or not local.is_file():
            raise CTBenchError(
                f"no RadFM weights in {local}: download and unzip the archive of hub repo "
                f"{CARD.weights.hub_repo} (it holds pytorch_model.bin), then run `ctbench weights "
                f"extract radfm pytorch_model.bin`; or pass --weights PATH / --weights random"
            )
    return resolve_weights(CARD, weights)


class RadFMEncoder:
    """Frozen RadFM vision encoder: mean-pooled embedding (768-d) and the patch-token grid."""

    card = CARD
    default_precision = "fp32"  # the official demo (Quick_demo/test.py) runs in fp32

    def __init__(self, weights: str = "auto", device: str = "cpu", variant: str = "full",
                 *, hu_window: tuple[float, float] = DEFAULT_WINDOW, minmax: bool = False,
                 batch_size: int = 4, precision: str | None = None) -> None:
        import torch

        from ctbench.adapters._common import build_module, check_variant, resolve_precision

        check_variant("RadFM", variant, VARIANTS, weights)
        self.precision = resolve_precision(precision, "radfm", self.default_precision)
        lo, hi = (float(v) for v in hu_window)
        if not hi > lo:
            raise CTBenchError(f"radfm: hu_window must be (low, high) with high > low, got {hu_window}")
        self.variant, self.hu_window, self.minmax, self.batch_size = variant, (lo, hi), minmax, batch_size
        self.config = CONFIGS[variant]
        self.embedding_dim = self.token_dim = self.config["dim"]
        self.device = torch.device(device)
        self.weights_ref = _resolve(weights)
        self.model = build_module(self.weights_ref, lambda: build_network(variant), load_weights, self.device)
        self.autocast = self.precision == "bf16"
        self.preprocessing_id = CARD.preprocessing_hash({
            "variant": variant, "orientation": ORIENTATION, "hu_window": self.hu_window,
            "minmax": minmax, "image_size": self.config["image_size"], "inplane": "trilinear",
            "depth": f"nearest-exact to the nearest multiple of 4, <= {self.config['max_depth']}",
            "precision": self.precision,
        })

    def preprocess(self, volume: "MetaTensor") -> "MetaTensor":
        """Network input ``(1, row, col, slice)`` (grey) with its index -> world affine."""
        return preprocess(volume, self.config["image_size"], self.config["max_depth"], self.hu_window,
                          self.minmax)

    def _forward(self, batch: list["MetaTensor"]) -> list[Features]:
        from ctbench.adapters._common import affine_of, run_batch, split_features, token_affine

        channels = self.config["channels"]  # grey repeated to 3 channels
        grid = run_batch(lambda x: self.model(x.expand(-1, channels, -1, -1, -1)), batch, self.device,
                         self.autocast).float()
        p, pf = self.config["image_patch_size"], self.config["frame_patch_size"]
        return split_features(grid.mean(dim=(1, 2, 3)), grid.permute(0, 4, 1, 2, 3),
                              [token_affine(affine_of(v), (p, p, pf)) for v in batch])

    def encode(self, volume: "MetaTensor") -> Features:
        return self._forward([self.preprocess(volume)])[0]

    def encode_batch(self, volumes: Sequence["MetaTensor"]) -> list[Features]:
        """Preprocess all, then run inputs of equal depth together, ``batch_size`` at a time."""
        from ctbench.adapters._common import encode_grouped

        return encode_grouped([self.preprocess(v) for v in volumes], self._forward, self.batch_size)
