"""ctbench adapter for CT-CLIP (Hamamci et al., arXiv:2403.17834): the CTViT image encoder of the
CLIP model trained on CT-RATE chest CTs and their reports.

Cheap to import: torch, MONAI and the network (``ctclip_net``) load when an encoder is built.

Preprocessing (reference ``data_inference_nii.py``, as MONAI transforms on the canonical volume):
1. reorient to ``LPS`` axis codes (array axis i -> patient left, j -> posterior, k -> superior).
   The reference applies no reorientation: its tensor ``(slice, row, col)`` is the NIfTI file's
   ``(k, i, j)``. CT-RATE volumes come from DICOM series, whose usual array layout is this one
   (the tensor's axis codes are then S, L, P, the "SLP" of the community reconstruction), so
   reorienting first gives every input the layout the model was trained on and leaves such
   files unchanged. This layout is inferred, not stated by the reference.
2. clip HU to [-1000, 1000] and divide by 1000;
3. trilinear resize (``align_corners=False``) to 0.75 x 0.75 x 1.5 mm: new size
   ``int(n * spacing / target)`` per axis, as in the reference;
4. centre crop / pad (value -1) to 480 x 480 x 240 (L, P, S);
5. permute to ``(1, slice, row, col) = (1, 240, 480, 480)``.

Features: ``embedding`` = the CLIP image latent (frame-mean of the quantised tokens, flattened,
``to_visual_latent``, L2-normalised; 512-d); ``tokens`` = quantised CTViT tokens
``(512, t, h, w) = (512, 24, 24, 24)`` of 15 mm cells along (slice, row, col).

Options: ``tokens="pre-quantisation"`` gives dense tasks the CTViT tokens before the vector
quantiser (not what the reference returns). The quantised tokens are the faithful default but
localise poorly: on a 20 mm sphere, the token that changes most sits 3.5-6 tokens away from it,
against within 0.54 tokens before quantisation. The embedding is the reference's either way.
``precision``: ``fp32`` (default, as the reference's inference) or ``bf16`` autocast; bf16 can
change which codebook row a token snaps to (``benchmarks/precision_check.py`` counts them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ctbench.card import InputSpec, ModelCard, ParityFacts, WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.types import Features
from ctbench.weights import resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from monai.data import MetaTensor

__all__ = ["CARD", "CTCLIPEncoder", "preprocess", "load_weights", "image_state"]

NAME = "ct-clip"
ORIENTATION = "LPS"
HU_WINDOW = (-1000.0, 1000.0)
SPACING_MM = (0.75, 0.75, 1.5)  # along the reoriented (L, P, S) axes = (row, col, slice)
PAD_VALUE = -1.0
SIZES = {"full": (480, 480, 240), "test": (80, 80, 40)}  # (L, P, S) = (row, col, slice)
VARIANTS = tuple(SIZES)
TOKEN_KINDS = ("quantised", "pre-quantisation")
# Keys of the official CLIP file that are not part of the image encoder.
IGNORED_PREFIXES = ("text_transformer.", "to_text_latent.", "to_text_latent_extra.",
                    "to_visual_latent_extra.", "temperature")
IMAGE_PREFIXES = ("visual_transformer.", "to_visual_latent.")

CARD = ModelCard(
    group="paper", weights_access="gated", non_commercial=True,
    name=NAME,
    title="CT-CLIP: CTViT image encoder contrastively trained with chest CT reports (CT-RATE)",
    citation=(
        "Hamamci, I. E. et al. Developing Generalist Foundation Models from a Multimodal Dataset "
        "for 3D Computed Tomography. arXiv:2403.17834 (2024)"
    ),
    licence=(
        "weights CC-BY-NC-SA-4.0 (non-commercial use only, share-alike; trained on CT-RATE, same "
        "terms); the reference code repository has no licence file"
    ),
    architecture=(
        "CTViT: 20x20 (row, col) x 10 (slice) patches -> 512-d (LayerNorm-Linear-LayerNorm), 4 "
        "spatial blocks with continuous relative position bias + 4 temporal blocks, PEG, "
        "cosine-sim attention (8 heads x 32), GEGLU FFN, cosine-sim VQ (8192 codes); image latent "
        "= Linear(24*24*512 -> 512, no bias) of the frame-mean tokens, L2-normalised. Parameters: "
        "CTViT 25,890,200 + to_visual_latent 150,994,944"
    ),
    parameters=176_885_144,
    embedding_dim=512,
    token_dim=512,
    supervision="language",
    pretraining_datasets=("CT-RATE",),
    input=InputSpec(
        orientation="LPS (array i -> left, j -> posterior, k -> superior; inferred CT-RATE layout)",
        spacing_mm=SPACING_MM,
        hu_window=HU_WINDOW,
        intensity="clip(HU, -1000, 1000) / 1000; padding -1",
        spatial_size=SIZES["full"],
        axis_order="(B, 1, slice, row, col) = (B, 1, 240, 480, 480) = (S, L, P) axes",
    ),
    weights=WeightsSpec(
        hub_repo="ibrahimhamamci/CT-RATE",
        hub_repo_type="dataset",
        filename="models/CT-CLIP-Related/CT-CLIP_v2.pt",
        revision=None,
        sha256=None,
        format="torch",
    ),
    parity=ParityFacts(
        reference="github.com/ibrahimethemhamamci/CT-CLIP",
        reference_version="a2a155c601987820433c01db69b64d701d3d229d",
        fixture="ctclip",
        tolerance=1e-5,
        measured=0.0,
        checked="2026-12-05",
        scope=(
            "preprocessing at 240 x 480 x 480 (1.2e-6; data_inference_nii.py interpolates in float64); "
            "CTViT + CTCLIP (vector-quantize-pytorch 1.1.2) at the test size: image latent (tolerance "
            "and measured) + all quantised tokens (2.3e-4) and pre-quantisation tokens (2.5e-4; fp16 "
            "storage)"
        ),
    ),
)


def preprocess(volume: "MetaTensor", size: Sequence[int] = SIZES["full"]) -> "MetaTensor":
    """Canonical volume -> network input ``(1, slice, row, col)`` float32 MetaTensor whose
    ``affine`` maps its index to world RAS mm (tracked by MONAI through every step)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Resize, ResizeWithPadOrCrop, ScaleIntensityRange

    from ctbench.adapters._common import affine_of, permute_affine
    from ctbench.adapters._common import preprocess as run

    ras = (("L", "R"), ("P", "A"), ("I", "S"))
    x = run(volume, [Orientation(axcodes=ORIENTATION, labels=ras)], NAME)
    spacing = np.linalg.norm(affine_of(x)[:3, :3], axis=0)
    # The reference truncates n * spacing / target with spacings read as exact decimals from its
    # metadata table; spacings from a (float32, rotated) affine carry ~1e-7 noise, so 1.5 mm can
    # read 1.4999999 and lose a voxel. Rounding the ratio to 1e-4 first keeps the reference's size.
    shape = [max(1, int(round(n * s / t, 4))) for n, s, t in zip(x.shape[1:], spacing, SPACING_MM)]
    lo, hi = HU_WINDOW
    x = run(x, [
        ScaleIntensityRange(a_min=lo, a_max=hi, b_min=lo / 1000, b_max=hi / 1000, clip=True),
        Resize(spatial_size=shape, mode="trilinear"),
        ResizeWithPadOrCrop(spatial_size=tuple(size), mode="constant", value=PAD_VALUE),
    ], NAME)
    order = (2, 0, 1)  # (L, P, S) -> (slice, row, col)
    return MetaTensor(x.as_tensor().permute(0, 3, 1, 2).contiguous(),
                      affine=torch.as_tensor(permute_affine(affine_of(x), order)))


def image_state(state: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Keep the image-tower entries of an official CT-CLIP file (``visual_transformer.*`` and
    ``to_visual_latent.weight``); text-tower keys are dropped, anything else is an error. A
    ``module.`` prefix on every key (a DDP-wrapped training checkpoint) is removed first."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if not any(k.startswith("visual_transformer.") for k in state):
        return dict(state)
    stray = [k for k in state if not k.startswith(IMAGE_PREFIXES + IGNORED_PREFIXES)]
    if stray:
        raise CTBenchError(
            f"{source}: unexpected keys {stray[:8]} beside the CT-CLIP image and text towers; "
            f"pass the official CT-CLIP_v2.pt (or a state_dict of visual_transformer + "
            f"to_visual_latent)"
        )
    return {k: v for k, v in state.items() if k.startswith(IMAGE_PREFIXES)}


def load_weights(model: "torch.nn.Module", path: str | Path) -> None:
    """Load an official CT-CLIP checkpoint into ``model`` strictly, with clear errors."""
    from ctbench.adapters._common import load_strict, read_checkpoint

    load_strict(model, image_state(read_checkpoint(path, NAME), str(path)), str(path), NAME)


class CTCLIPEncoder:
    """Frozen CT-CLIP image tower: 512-d CLIP image latent and the quantised token grid
    (``tokens="pre-quantisation"``: the grid before the quantiser)."""

    card = CARD
    default_precision = "fp32"  # the reference's inference (accelerate, no mixed precision)

    def __init__(self, weights: str = "auto", device: str = "cpu", variant: str = "full",
                 *, batch_size: int = 2, tokens: str = "quantised", precision: str | None = None) -> None:
        import torch

        from ctbench.adapters._common import build_module, check_variant, resolve_precision
        from ctbench.adapters.ctclip_net import build_network

        check_variant("CT-CLIP", variant, VARIANTS, weights)
        if tokens not in TOKEN_KINDS:
            raise CTBenchError(f"ct-clip: tokens {tokens!r} is not one of {', '.join(TOKEN_KINDS)}; e.g. "
                               f"--model-option tokens=pre-quantisation")
        self.variant, self.size, self.batch_size, self.tokens = variant, SIZES[variant], batch_size, tokens
        self.precision = resolve_precision(precision, NAME, self.default_precision)
        self.device = torch.device(device)
        self.weights_ref = resolve_weights(CARD, weights)
        pre = tokens == "pre-quantisation"
        self.model = build_module(self.weights_ref, lambda: build_network(variant, pre), load_weights, self.device)
        self.config = self.model.visual_transformer.cfg
        self.embedding_dim, self.token_dim = self.config.dim_latent, self.config.dim
        self.autocast = self.precision == "bf16"
        #: what shapes the features (recorded in result.json; hashed into the preprocessing id)
        self.settings = {
            "variant": variant, "orientation": ORIENTATION, "spacing_mm": list(SPACING_MM),
            "hu_window": list(HU_WINDOW), "scale": 1000, "pad_value": PAD_VALUE, "spatial_size": list(self.size),
            "resize": "trilinear, int(round(n*spacing/target, 4))", "axis_order": "slice,row,col",
            "tokens": tokens, "precision": self.precision + (", fp32 VQ" if self.autocast else ""),
        }
        self.preprocessing_id = CARD.preprocessing_hash(self.settings)

    def preprocess(self, volume: "MetaTensor") -> "MetaTensor":
        """Network input ``(1, slice, row, col)`` with its index -> world affine."""
        return preprocess(volume, self.size)

    def _forward(self, batch: list["MetaTensor"]) -> list[Features]:
        from ctbench.adapters._common import affine_of, run_batch, split_features, token_affine

        latent, tokens = run_batch(self.model, batch, self.device, self.autocast)
        c = self.config
        strides = (c.temporal_patch_size, c.patch_size, c.patch_size)
        affines = [token_affine(affine_of(v), strides) for v in batch]
        return split_features(latent, tokens.permute(0, 4, 1, 2, 3), affines)

    def encode(self, volume: "MetaTensor") -> Features:
        return self._forward([self.preprocess(volume)])[0]

    def encode_batch(self, volumes: Sequence["MetaTensor"]) -> list[Features]:
        """Every input has the same fixed size, so volumes run ``batch_size`` at a time."""
        out: list[Features] = []
        for s in range(0, len(volumes), self.batch_size):
            out += self._forward([self.preprocess(v) for v in volumes[s:s + self.batch_size]])
        return out
