"""ctbench adapter for COLIPRI (Microsoft Health Futures; Wald et al., arXiv:2510.15042): the 3D
image encoder of a chest-CT vision-language model pre-trained with contrastive, report-generation
and masked-image objectives (the released COLIPRI-CRM weights).

Cheap to import: torch, MONAI and the network (``colipri_net``) load when an encoder is built.

Facts from the official ``colipri`` 0.1.3 package (``configs/``, ``model/image.py``,
``pooling.py``, ``processor.py``, ``defaults.py``) and ``dynamic-network-architectures`` 0.4.4
(``architectures/primus.py``, ``building_blocks/eva.py``):

- network: ``Primus`` (input 192^3, patch 8^3, 864-d, 16 EVA blocks, 12 heads, SwiGLU MLP ratio
  8/3, LayerScale 0.1, attention-output LayerNorm, 3D RoPE, no absolute position embedding, no
  register tokens; the decoder is replaced by an identity), a Conv3d 1x1x1 projector 864 -> 768
  and a 12-head attention pool whose query is the mean token;
- preprocessing (torchio, ``configs/processor/image_transform``): ``ToOrientation("RAS")``,
  ``Resample(2)`` (linear, no antialiasing), ``Clamp(-1000, 1000)``, ``RescaleIntensity`` to
  [-1, 1], ``CropOrPad(192^3, padding_mode="minimum")``;
- features: ``embedding`` is ``encode_image(pool=True, project=True)`` (768-d, not
  L2-normalised, as the package's feature-extraction example); ``tokens`` are the backbone's
  patch embeddings ``encode_image()`` (864, 24, 24, 24) along the RAS input axes.

The preprocessing is written with MONAI transforms that track the affine and reproduce torchio's
geometry exactly: torchio resamples onto a grid centred on the field of view (voxel centres of
the first and last voxels), of size ``floor(n * spacing / 2)`` along each axis, keeping the
(possibly oblique) direction; ``CropOrPad`` pads / crops ``ceil(d / 2)`` voxels before and
``floor(d / 2)`` after, padding with the volume's minimum (after the window).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ctbench.card import InputSpec, ModelCard, ParityFacts, WeightsSpec
from ctbench.types import Features
from ctbench.weights import resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from monai.data import MetaTensor

__all__ = ["CARD", "VARIANTS", "ColipriEncoder", "centred_grid", "crop_or_pad_bounds", "preprocess",
           "load_weights"]

NAME = "colipri"
PREFIX = "image_encoder."  # the hub file holds the whole vision-language model
IGNORED_PREFIXES = ("text_encoder.", "softmax_temperature")  # its text tower and softmax temperature
ORIENTATION = "RAS"
SPACING_MM = 2.0
HU_WINDOW = (-1000.0, 1000.0)
INPUT_SIZE = 192
PATCH = 8
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},  # the published configuration (ColipriConfig defaults)
    # CI stand-in: same input and preprocessing; tiny width and depth, 16^3 patches (12^3 tokens)
    "test": dict(embed_dim=48, depth=2, num_heads=4, projection_dim=24, patch_size=16),
}

CARD = ModelCard(
    name=NAME,
    title="COLIPRI: 3D chest-CT vision-language encoder (Primus-M ViT, COLIPRI-CRM weights)",
    citation=(
        "Wald T, Hamamci IE, Gao Y, et al. Comprehensive language-image pre-training for 3D medical "
        "image understanding. arXiv:2510.15042 (2026)"
    ),
    licence="MIT (code: colipri package; weights: microsoft/colipri model card); research use only, not clinical",
    architecture=(
        "Primus 3D ViT (dynamic-network-architectures): Conv3d 8^3 patch embedding, 16 EVA blocks, "
        "864-d, 12 heads, 3D RoPE, SwiGLU MLP (2304, LayerNorm), attention-output LayerNorm, "
        "LayerScale, no absolute position embedding or registers; Conv3d 1x1x1 projection to 768 "
        "and a 12-head attention pool (query: mean token). Embedding: the pooled 768-d vector; "
        "tokens: backbone patch embeddings (864, 24, 24, 24). Pre-training data inferred from the "
        "paper and model card (Turkey and USA): CT-RATE scans with reports and NLST scans"
    ),
    parameters=147_112_224,
    embedding_dim=768,
    token_dim=864,
    supervision="language",
    pretraining_datasets=("CT-RATE", "NLST"),
    input=InputSpec(
        orientation=ORIENTATION,
        spacing_mm=(SPACING_MM, SPACING_MM, SPACING_MM),
        hu_window=HU_WINDOW,
        intensity="clip(HU, -1000, 1000) scaled to [-1, 1] (HU / 1000)",
        spatial_size=(INPUT_SIZE, INPUT_SIZE, INPUT_SIZE),
        axis_order=(
            "(B, 1, X, Y, Z) RAS; linear resampling onto a grid centred on the field of view "
            "(size floor(n * spacing / 2)), then centre crop/pad to 192^3 with the volume's minimum"
        ),
    ),
    weights=WeightsSpec(
        hub_repo="microsoft/colipri",
        filename="model.safetensors",
        revision=None,
        sha256=None,
        format="safetensors",
    ),
    parity=ParityFacts(
        reference="colipri package (huggingface.co/microsoft/colipri)",
        reference_version="0.1.3",
        fixture="colipri",
        tolerance=1e-5,
        measured=1.7e-7,
        checked="2026-12-05",
        scope=(
            "package processor (torchio 1.2.1: RAS, 2 mm linear resampling, window, crop/pad 192^3) on "
            "an oblique LPS NIfTI padded to both pad and crop: network input within 7e-7, affine; "
            "pooled embedding (tolerance and measured) and all patch tokens (fp16-stored, rel <= 1e-3) "
            "of the test size (48-d, 2 blocks, 16^3 patches); hub model.safetensors layout "
            "(dynamic-network-architectures 0.4.4, timm 1.0.22)"
        ),
    ),
    group="newer",
    weights_access="public",
    non_commercial=False,
)


def centred_grid(affine: np.ndarray, shape: Sequence[int], spacing: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The output grid of torchio's ``Resample(spacing)`` for a volume with ``affine`` (index ->
    world) and ``shape``: same direction, isotropic ``spacing``, ``floor(n * old / new)`` voxels
    per axis (singleton axes kept), centred on the centre of the old voxel-centre box."""
    affine = np.asarray(affine, dtype=np.float64)
    old_size = np.asarray(shape, dtype=np.float64)
    old_spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = affine[:3, :3] / old_spacing
    new_spacing = np.full(3, float(spacing))
    new_size = np.floor(old_size * old_spacing / new_spacing)
    new_size[old_size == 1] = 1
    centre = affine[:3, :3] @ ((old_size - 1) / 2) + affine[:3, 3]
    out = np.eye(4)
    out[:3, :3] = direction * new_spacing
    out[:3, 3] = centre - direction @ ((new_size - 1) / 2 * new_spacing)
    return out, tuple(int(s) for s in new_size)  # type: ignore[return-value]


def crop_or_pad_bounds(shape: Sequence[int], target: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """torchio ``CropOrPad`` amounts: (padding ``[before0, after0, before1, ...]``, crop start,
    crop end in the padded volume); an odd difference puts the extra voxel before."""
    pad: list[int] = []
    start: list[int] = []
    end: list[int] = []
    for n, t in zip(shape, target):
        p, c = max(t - n, 0), max(n - t, 0)
        pad += [math.ceil(p / 2), p // 2]
        start.append(math.ceil(c / 2))
        end.append(math.ceil(c / 2) + t)
    return pad, start, end


def preprocess(volume: "MetaTensor", size: int = INPUT_SIZE, spacing: float = SPACING_MM) -> "MetaTensor":
    """Canonical volume -> network input ``(1, 192, 192, 192)`` in [-1, 1] (RAS axes), a MetaTensor
    whose affine (tracked by MONAI) maps its index to world mm."""
    import torch
    from monai.transforms import BorderPad, Orientation, ScaleIntensityRange, SpatialCrop, SpatialResample

    from ctbench.adapters._common import affine_of
    from ctbench.adapters._common import preprocess as run

    ras = (("L", "R"), ("P", "A"), ("I", "S"))
    x = run(volume, [Orientation(axcodes=ORIENTATION, labels=ras)], NAME)
    dst, grid = centred_grid(affine_of(x), x.shape[1:], spacing)
    resample = SpatialResample(mode="bilinear", padding_mode="border", align_corners=True, dtype=torch.float64)
    lo, hi = HU_WINDOW
    x = run(x, [lambda v: resample(v, dst_affine=torch.as_tensor(dst), spatial_size=grid),
                ScaleIntensityRange(a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True)], NAME)
    x = x.to(torch.float32)
    pad, start, end = crop_or_pad_bounds(x.shape[1:], (size,) * 3)
    steps = [BorderPad(spatial_border=pad, mode="constant", value=float(x.min()))] if any(pad) else []
    steps.append(SpatialCrop(roi_start=start, roi_end=end))
    return run(x, steps, NAME)


def load_weights(model: "torch.nn.Module", path: str | Path) -> None:
    """Load the hub's ``model.safetensors`` (image encoder kept, text tower dropped) or an
    image-encoder-only state dict strictly."""
    from ctbench.adapters._common import load_strict, read_checkpoint, select_prefix

    state = select_prefix(read_checkpoint(path, NAME), PREFIX, IGNORED_PREFIXES, str(path))
    load_strict(model, state, str(path), NAME)


class ColipriEncoder:
    """Frozen COLIPRI image encoder: pooled 768-d embedding and the (864, 24, 24, 24) token grid."""

    card = CARD
    default_precision = "fp32"  # the package's examples run in fp32

    def __init__(self, weights: str = "auto", device: str = "cpu", variant: str = "full", *,
                 batch_size: int = 2, precision: str | None = None) -> None:
        import torch

        from ctbench.adapters._common import build_module, check_variant, resolve_precision
        from ctbench.adapters.colipri_net import ColipriConfig, build_network

        check_variant("COLIPRI", variant, VARIANTS, weights)
        self.precision = resolve_precision(precision, NAME, self.default_precision)
        self.autocast = self.precision == "bf16"
        self.variant, self.batch_size = variant, max(1, int(batch_size))
        self.config = ColipriConfig(**VARIANTS[variant])
        self.embedding_dim, self.token_dim = self.config.projection_dim, self.config.embed_dim
        self.device = torch.device(device)
        self.weights_ref = resolve_weights(CARD, weights)
        self.model = build_module(self.weights_ref, lambda: build_network(self.config), load_weights, self.device)
        self.settings = {
            "variant": variant, "orientation": ORIENTATION, "spacing_mm": SPACING_MM, "hu_window": list(HU_WINDOW),
            "spatial_size": INPUT_SIZE, "resample": "linear, centred grid", "pad": "minimum",
            "embedding": "attention pool of projected tokens", "precision": self.precision,
        }
        self.preprocessing_id = CARD.preprocessing_hash(self.settings)

    def preprocess(self, volume: "MetaTensor") -> "MetaTensor":
        """Network input ``(1, 192, 192, 192)`` with its index -> world affine."""
        return preprocess(volume, self.config.input_size)

    def token_affine(self, input_affine: np.ndarray) -> np.ndarray:
        """Token index -> world mm: token ``t`` covers input voxels ``8t .. 8t + 7``."""
        from ctbench.adapters._common import token_affine

        return token_affine(input_affine, (self.config.patch_size,) * 3)

    def _forward(self, batch: list["MetaTensor"]) -> list[Features]:
        from ctbench.adapters._common import affine_of, run_batch, split_features

        tokens, embedding = run_batch(self.model, batch, self.device, self.autocast)
        return split_features(embedding, tokens, [self.token_affine(affine_of(v)) for v in batch])

    def encode(self, volume: "MetaTensor") -> Features:
        return self._forward([self.preprocess(volume)])[0]

    def encode_batch(self, volumes: Sequence["MetaTensor"]) -> list[Features]:
        """Every input has the same fixed size, so volumes run ``batch_size`` at a time."""
        out: list[Features] = []
        for s in range(0, len(volumes), self.batch_size):
            out += self._forward([self.preprocess(v) for v in volumes[s:s + self.batch_size]])
        return out
