"""ctbench adapter for SPECTRE (Claessens et al., "Scaling Self-Supervised and Cross-Modal
Pretraining for Volumetric CT Transformers", CVPR 2026; package ``spectre-fm``): a ViT-L over
128 x 128 x 64 CT crops plus a transformer "feature combiner" that gives one embedding per scan.

Cheap to import: only the card lives at module level; torch, MONAI and the network module
(``spectre_net``) load when an encoder is built.

Preprocessing (``spectre.io.load_and_window`` / ``spectre.windowing.window_scan``, the official
``spectre embed`` defaults), as MONAI transforms with a tracked affine:
1. HU window [-1000, 1000] -> [0, 1], clipped (before any resampling, as the official code);
2. reorient to RAS (the official loader's ``nib.as_closest_canonical``);
3. native spacing by default; option ``spacing_mm`` resamples (bilinear) as ``--spacing`` does;
4. an axis shorter than one crop is padded symmetrically to one crop (with 0, the scaled air;
   after resampling, with the volume's minimum, as the official code);
5. centre crop (MONAI's offset ``size // 2 - roi // 2``) to the largest multiple of the crop;
6. tile into 128 x 128 x 64 crops on a regular (nH, nW, nD) grid, depth fastest.

Features: ``embedding`` = the combiner's CLS row (1080-d, the ``cls`` of ``spectre embed``);
``tokens`` = the combiner's per-crop rows ``(1080, nH, nW, nD)`` (its ``patch_tokens``), and
``token_affine`` maps crop index -> crop centre in world mm through the tracked affine.

Weights (``--weights``): ``auto`` fetches the two published files of ``cclaess/SPECTRE``
(backbone, then combiner); ``PATH`` is either one file with ``backbone.*`` and
``feature_combiner.*`` keys (the official ``SpectreImageFeatureExtractor.state_dict()``) or the
official backbone file with the official combiner file beside it under its published name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ctbench.card import InputSpec, ModelCard, ParityFacts, WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.types import Features
from ctbench.weights import WeightsRef, resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from monai.data import MetaTensor

    from .spectre_net import SpectreArch

__all__ = ["CARD", "VARIANTS", "SpectreEncoder", "arch", "build_network", "preprocess", "load_spectre_state"]

NAME = "spectre"
HU_WINDOW = (-1000.0, 1000.0)
CROP_SIZE = (128, 128, 64)
PATCH_SIZE = (16, 16, 8)
HUB_REPO = "cclaess/SPECTRE"
BACKBONE_FILE = "spectre_backbone_vit_large_patch16_128.pt"
COMBINER_FILE = "spectre_combiner_feature_vit_large.pt"
PREFIXES = ("backbone.", "feature_combiner.")
RAS = (("L", "R"), ("P", "A"), ("I", "S"))

# Official presets (spectre/presets.py, models/vision_transformer*.py): backbone width, depth,
# heads; combiner width, depth, heads. Only "large" has published weights.
VARIANTS: dict[str, tuple[int, int, int, int, int, int]] = {
    "large": (1080, 24, 12, 1080, 4, 12),  # vit_large_patch16_128 + feat_vit_large
    "base": (768, 12, 8, 768, 2, 8),  # vit_base_patch16_128 + feat_vit_base
    "small": (384, 12, 4, 384, 2, 4),  # vit_small_patch16_128 + feat_vit_small
    "test": (48, 2, 2, 48, 1, 2),  # CI stand-in: same crops, patches and preprocessing
}

CARD = ModelCard(
    name=NAME,
    group="newer",
    title="SPECTRE: ViT-L over CT crops + transformer feature combiner (SSL + vision-language)",
    citation=(
        "Claessens C, Viviers C, D'Amicantonio G, Bondarev E, van der Sommen F. Scaling "
        "Self-Supervised and Cross-Modal Pretraining for Volumetric CT Transformers. CVPR 2026 "
        "(arXiv:2511.17209)"
    ),
    licence="code MIT; weights CC-BY-NC-SA-4.0 (LICENSE_MODELS of spectre-fm)",
    architecture=(
        "local 3D ViT-L on 128x128x64 crops (Conv3d 16x16x8 patches, 8x8x8 = 512 tokens, 1080-d, 24 "
        "pre-norm blocks, 12 heads, LayerScale, CLS token, axial 3D RoPE base 1000, no absolute "
        "position embedding); each crop pooled to [CLS, mean patch token] (2160-d); feature combiner: "
        "Linear 2160 -> 1080, 4 blocks, 12 heads, CLS, 3D RoPE base 100 over the crop grid. "
        "Embedding: combiner CLS; tokens: combiner rows, one per crop"
    ),
    parameters=396_917_280,  # backbone 338,528,160 + combiner 58,389,120, as built
    embedding_dim=1080,
    token_dim=1080,
    supervision="language",
    # The package's DINO / DINOv2 / MAE configs list these public collections, its SigLIP config the
    # first three (CT-RATE, INSPECT, Merlin, with reports); the released mixture is inferred from
    # those configs (the README says only "open-source CT scans of the abdomen and thorax").
    pretraining_datasets=("CT-RATE", "INSPECT", "Merlin", "NLST", "AMOS", "AbdomenAtlas", "PANORAMA",
                          "AbdomenCT-1K"),
    input=InputSpec(
        orientation="RAS",
        spacing_mm=(
            "native (the official inference default) or option spacing_mm; pre-training resampled to "
            "0.5x0.5x1.0 (SSL) and 0.75x0.75x1.5 (language stage)"
        ),
        hu_window=HU_WINDOW,
        intensity="clip(HU, -1000, 1000) scaled to [0, 1], before any resampling",
        spatial_size=(
            "axes shorter than 128x128x64 padded symmetrically to one crop, then a centre crop to "
            "the largest multiple of 128x128x64, tiled into crops (grid nH x nW x nD)"
        ),
        axis_order="crops (B*N, 1, R, A, S) = (128, 128, 64); crop grid (nH, nW, nD) along R, A, S",
    ),
    weights=WeightsSpec(
        hub_repo=HUB_REPO,
        filename=BACKBONE_FILE,
        revision=None,
        sha256=None,
        format="torch",
    ),
    parity=ParityFacts(
        reference="spectre-fm (github.com/cclaess/SPECTRE)",
        reference_version="0.2.1",
        fixture="spectre",
        tolerance=1e-5,
        measured=0.0,
        checked="2026-12-05",
        scope=(
            "official load_and_window at native spacing (int16 LPS-oblique NIfTI, 2x1x2 crop grid): "
            "network input bit-identical; SpectreImageFeatureExtractor (preset kwargs, test size: "
            "48-d backbone x 2 blocks, combiner x 1 block) from the two-file published layout: "
            "combiner CLS embedding and per-crop tokens identical in fp32 (fp16-stored, rel 3.2e-4); "
            "the resampling option is not covered (broken in spectre-fm 0.2.1 with MONAI >= 1.0)"
        ),
    ),
    weights_access="public",
    non_commercial=True,
)

# The combiner's file: a second hub file, resolved (cached, locked) like the backbone's.
COMBINER_CARD = CARD.model_copy(update={
    "name": f"{NAME}-combiner",
    "weights": WeightsSpec(hub_repo=HUB_REPO, filename=COMBINER_FILE, format="torch"),
})


def arch(variant: str) -> "SpectreArch":
    """The network sizes of ``variant`` (crop and patch sizes are the same for all)."""
    from .spectre_net import SpectreArch

    if variant not in VARIANTS:
        raise CTBenchError(f"unknown SPECTRE variant {variant!r}; choose one of {tuple(VARIANTS)}")
    d, depth, heads, cd, cdepth, cheads = VARIANTS[variant]
    return SpectreArch(CROP_SIZE, PATCH_SIZE, d, depth, heads, cd, cdepth, cheads)


def build_network(variant: str = "large") -> "torch.nn.Module":
    """A randomly initialised SPECTRE network (call under ``ctbench.weights.seeded_init``)."""
    from .spectre_net import SpectreNet

    return SpectreNet(arch(variant))


def preprocess(volume: "MetaTensor", spacing_mm: Sequence[float] | None = None,
               crop_size: Sequence[int] = CROP_SIZE) -> "MetaTensor":
    """Canonical volume -> network input ``(1, H, W, D)`` (RAS, each axis a multiple of the
    crop), a MetaTensor whose affine MONAI tracked (index -> world RAS mm)."""
    from monai.transforms import CenterSpatialCrop, Orientation, ScaleIntensityRange, Spacing, SpatialPad

    from ._common import preprocess as run

    lo, hi = HU_WINDOW
    steps: list = [ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
                   Orientation(axcodes="RAS", labels=RAS)]
    if spacing_mm is not None:
        steps.append(Spacing(pixdim=tuple(float(s) for s in spacing_mm), mode="bilinear"))
    x = run(volume, steps, NAME)
    crop = tuple(int(c) for c in crop_size)
    if any(s < c for s, c in zip(x.shape[1:], crop)):
        pad_value = 0.0 if spacing_mm is None else float(x.min())  # air after scaling; else the minimum
        x = run(x, [SpatialPad(spatial_size=crop, method="symmetric", value=pad_value)], NAME)
    roi = tuple((s // c) * c for s, c in zip(x.shape[1:], crop))
    return run(x, [CenterSpatialCrop(roi_size=roi)], NAME)


def _combiner_beside(path: Path) -> Path | None:
    beside = path.parent / COMBINER_FILE
    return beside if beside.is_file() and beside.resolve() != path.resolve() else None


def load_spectre_state(module: Any, path: Any, combiner: Path | None = None) -> None:
    """Load SPECTRE weights strictly: one file with ``backbone.`` / ``feature_combiner.`` keys,
    or a backbone file (official, unprefixed) plus the ``combiner`` file."""
    from ._common import load_strict, read_checkpoint

    state = read_checkpoint(path, NAME)
    if any(k.startswith(PREFIXES) for k in state):
        load_strict(module, state, str(path), NAME)
        return
    if combiner is None:
        raise CTBenchError(
            f"{path}: holds one network's keys (no 'backbone.' / 'feature_combiner.' prefixes), and no "
            f"feature-combiner file {COMBINER_FILE} lies beside it. Put the official {COMBINER_FILE} in "
            f"the same folder, or pass one file holding both networks (backbone.* and "
            f"feature_combiner.* keys), or --weights random"
        )
    load_strict(module.backbone, state, str(path), f"{NAME} backbone")
    load_strict(module.feature_combiner, read_checkpoint(combiner, NAME), str(combiner), f"{NAME} feature combiner")


def _resolve_combiner(ref: WeightsRef, choice: str) -> WeightsRef | None:
    """The combiner file that goes with the resolved backbone ``ref``: beside it, else (for
    ``auto``) the cached or downloaded hub file; ``None`` when ``ref`` is random."""
    if ref.is_random or ref.path is None:
        return None
    beside = _combiner_beside(ref.path)
    if beside is not None:
        from ctbench.weights import sha256_file

        return WeightsRef(beside, sha256_file(beside))
    if choice != "auto":
        return None  # a single file with both networks (checked when loading)
    try:
        return resolve_weights(COMBINER_CARD, "auto")
    except CTBenchError as e:
        raise CTBenchError(
            f"spectre: the backbone weights are at {ref.path}, but the feature combiner "
            f"({COMBINER_FILE} of {HUB_REPO}) could not be fetched: {e}. Put {COMBINER_FILE} beside "
            f"the backbone file, or pass --weights PATH to a file holding both networks"
        ) from None


class SpectreEncoder:
    """Frozen SPECTRE: combiner CLS embedding (1080-d) and one combiner token per crop.

    Options: ``spacing_mm`` (resample before cropping, as the official ``--spacing``; default
    native spacing, the official inference default); ``crops_per_pass`` (crops per backbone
    forward, memory only: the official ``max_crops_per_forward`` of ``extract``, 16);
    ``batch_size`` (volumes of equal input shape per forward). ``variant``: ``large`` (published
    weights), ``base`` and ``small`` (official architectures without weights), ``test`` (CI).
    """

    card = CARD
    default_precision = "fp32"  # the official extractor runs in the model's dtype, fp32

    def __init__(
        self,
        weights: str = "auto",
        device: str = "cpu",
        variant: str = "large",
        *,
        spacing_mm: tuple[float, float, float] | None = None,
        crops_per_pass: int = 16,
        batch_size: int = 1,
        precision: str | None = None,
    ) -> None:
        import torch

        from ._common import build_module, check_variant, resolve_precision

        check_variant(NAME, variant, VARIANTS, weights, published="large")
        if spacing_mm is not None:
            spacing_mm = tuple(float(s) for s in spacing_mm)  # type: ignore[assignment]
            if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
                raise CTBenchError(f"spectre: spacing_mm must be three positive numbers (mm), got {spacing_mm}")
        self.precision = resolve_precision(precision, NAME, self.default_precision)
        self.autocast = self.precision == "bf16"
        self.variant, self.arch = variant, arch(variant)
        self.spacing_mm = spacing_mm
        self.crops_per_pass = max(1, int(crops_per_pass))
        self.batch_size = max(1, int(batch_size))
        self.embedding_dim = self.token_dim = self.arch.combiner_dim
        self.device = torch.device(device)
        self.weights_ref = resolve_weights(CARD, weights)
        self.combiner_ref = _resolve_combiner(self.weights_ref, str(weights))
        combiner = self.combiner_ref.path if self.combiner_ref else None
        self.model = build_module(self.weights_ref, lambda: build_network(variant),
                                  lambda m, p: load_spectre_state(m, p, combiner), self.device)
        self.preprocessing_id = CARD.preprocessing_hash({
            "variant": variant, "spacing_mm": list(spacing_mm) if spacing_mm else None,
            "crop_size": list(CROP_SIZE), "combiner_sha256": self.combiner_ref.sha256 if self.combiner_ref else None,
            **({"precision": self.precision} if self.autocast else {}),
        })

    def preprocess(self, volume: "MetaTensor") -> "MetaTensor":
        """Network input ``(1, H, W, D)`` (RAS, tiled by whole crops) with its tracked affine."""
        return preprocess(volume, self.spacing_mm)

    def token_affine(self, input_affine: np.ndarray) -> np.ndarray:
        """Crop index -> world mm of the crop's centre: crop ``t`` covers input voxels
        ``[c t, c t + c - 1]`` along an axis of crop size ``c``."""
        from ._common import token_affine

        return token_affine(input_affine, CROP_SIZE)

    def _forward(self, inputs: Sequence["MetaTensor"]) -> list[Features]:
        from ._common import affine_of, run_batch, split_features

        emb, tokens = run_batch(lambda x: self.model(x, self.crops_per_pass), inputs, self.device, self.autocast)
        return split_features(emb, tokens, [self.token_affine(affine_of(x)) for x in inputs])

    def encode(self, volume: "MetaTensor") -> Features:
        return self._forward([self.preprocess(volume)])[0]

    def encode_batch(self, volumes: Sequence["MetaTensor"]) -> list[Features]:
        """Inputs differ in size (native spacing): equal shapes run ``batch_size`` at a time."""
        from ._common import encode_grouped

        return encode_grouped([self.preprocess(v) for v in volumes], self._forward, self.batch_size)
