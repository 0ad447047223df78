"""ctbench adapter for VoxelFM (arXiv 2604.04133), the paper's own model.

Cheap to import: only the card lives at module level; torch and the ``voxelfm`` package are
imported when an encoder is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ctbench.card import InputSpec, ModelCard, ParityFacts, WeightsSpec
from ctbench.types import Features
from ctbench.weights import resolve_weights, seeded_init

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

__all__ = ["CARD", "VoxelFMEncoder"]

CARD = ModelCard(
    group="paper",
    name="voxelfm",
    title="VoxelFM: 3D CT ViT-B/14 pre-trained with DINO + iBOT + KoLeo self-distillation",
    citation=(
        "Learning Robust Visual Features in Computed Tomography Enables Efficient Transfer "
        "Learning for Clinical Tasks. arXiv:2604.04133 (2026)"
    ),
    licence="Apache-2.0",
    architecture=(
        "3D ViT: Conv3d 14^3 patch embedding, 12 pre-norm blocks, 864-d, 12 heads, MLP 4x GELU, "
        "LayerScale, 4 register tokens, 3D RoPE (base 100), no absolute position embedding"
    ),
    parameters=110_029_536,
    embedding_dim=864,
    token_dim=864,
    supervision="self-supervised",
    # The paper reports >137,000 CT studies from diverse institutions; neither the reference
    # repository nor its README names the source datasets, so none are listed here.
    pretraining_datasets=(),
    input=InputSpec(
        orientation="native",
        spacing_mm=(
            "isotropic max(min spacing, 0.75); no resampling when the three spacings are exactly "
            "equal (the reference's rule; option isotropy=tolerant accepts float noise)"
        ),
        hu_window=(-1000.0, 1900.0),
        intensity=(
            "(clip(HU, lo, hi) + 573.8) / 461.3; [lo, hi] = [-1000, 1900] for image files and "
            "[-1000, 1000] for DICOM series, as the reference's loaders (option hu_window)"
        ),
        spatial_size=(
            "foreground crop (HU > -800, 21^3 majority filter, margin 10), trilinear downsample "
            "to <= 25,000 tokens, centre crop to multiples of 14"
        ),
        axis_order="(B, D, H, W) = (k, j, i) of the file's index axes",
    ),
    weights=WeightsSpec(
        hub_repo="rmaguado/VoxelFM",
        filename="vitb_3d/checkpoints/99999.pth",
        revision=None,
        sha256=None,
        format="torch",
    ),
    parity=ParityFacts(
        reference="github.com/rmaguado/VoxelFM",
        reference_version="fba41a34c3e4dcfebbe902be5e2b2ce26db27d52",
        fixture="voxelfm",
        tolerance=1e-5,
        measured=3.9e-7,
        checked="2026-12-05",
        scope=(
            "NIfTI path (reference extract_features, foreground crop, <= 25,000 tokens): network "
            "input bit-identical, CLS embedding, every patch token (fp16-stored, rel <= 1e-3); "
            "released teacher checkpoint layout with its config.yaml; tiny config (48-d, 2 blocks)"
        ),
    ),
)

VARIANTS = ("base", "tiny")
# HU windows of the reference's loaders: its NIfTI and MetaImage loaders clip to [-1000, 1900]
# (the pre-training window); its DICOM loader clips to [-1000, 1000]. The paper's RSNA-PE,
# NSCLC-Radiomics and iCTCF features were read from DICOM, so with the narrower window.
HU_WINDOWS = {"nifti": (-1000.0, 1900.0), "dicom": (-1000.0, 1000.0)}
HU_WINDOW_RULES = ("reference", "nifti", "dicom")
ISOTROPY = {"exact": 0.0, "tolerant": 1e-6}  # relative tolerance of the "already isotropic" test


def hu_window_for(rule: str | Sequence[float], fmt: str | None) -> tuple[float, float]:
    """The HU window a volume read from format ``fmt`` (the reader's ``meta["format"]``) is
    clipped to: ``reference`` follows the reference's loaders (DICOM -> [-1000, 1000], any other
    file -> [-1000, 1900]); ``nifti`` / ``dicom`` force one of them; a pair is used as given."""
    if isinstance(rule, str):
        if rule == "reference":
            return HU_WINDOWS["dicom" if fmt == "dicom" else "nifti"]
        return HU_WINDOWS[rule]
    lo, hi = (float(v) for v in rule)
    return lo, hi


def _check_window(rule) -> str | tuple[float, float]:
    from ctbench.errors import CTBenchError

    if isinstance(rule, str) and rule in HU_WINDOW_RULES:
        return rule
    try:
        lo, hi = (float(v) for v in rule)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if isinstance(rule, str) or not hi > lo:
        raise CTBenchError(f"voxelfm: hu_window {rule!r} is not one of {', '.join(HU_WINDOW_RULES)} or a "
                           f"(low, high) pair with high > low; e.g. --model-option hu_window=reference")
    return lo, hi


class VoxelFMEncoder:
    """Frozen VoxelFM backbone: CLS embedding (864-d) and the patch-token grid (864, d, h, w).

    ``variant="tiny"`` is a small random-architecture stand-in for tests (same preprocessing).
    ``crop_background`` / ``max_tokens`` default to the reference evaluation pipeline.
    ``hu_window``: ``reference`` (default: DICOM series clipped to [-1000, 1000], other files to
    [-1000, 1900], as the reference's loaders, so the paper's DICOM datasets get the paper's
    features), ``nifti`` ([-1000, 1900] whatever the format: a DICOM series and its NIfTI
    conversion then give the same features), ``dicom`` ([-1000, 1000]) or a ``(low, high)`` pair.
    ``isotropy``: ``exact`` (default, the reference: resample unless the three spacings are exactly
    equal) or ``tolerant`` (equal within 1e-6 counts as isotropic: a sub-0.75 mm oblique volume
    then keeps its native spacing instead of being resampled to 0.75 mm).
    ``precision``: ``fp32`` (default, as the reference) or ``bf16`` autocast (faster on GPUs).
    The forward uses SDPA attention; equal input shapes are batched by ``encode_batch``;
    ``compile=True`` wraps the backbone in ``torch.compile`` (one compilation per input shape).
    """

    card = CARD
    default_precision = "fp32"  # the reference's inference runs in fp32

    def __init__(
        self,
        weights: str = "auto",
        device: str = "cpu",
        variant: str = "base",
        *,
        crop_background: bool = True,
        max_tokens: int | None = 25_000,
        max_batch_tokens: int = 50_000,
        compile: bool | str = False,
        hu_window: str | Sequence[float] = "reference",
        isotropy: str = "exact",
        precision: str | None = None,
    ) -> None:
        import torch

        from voxelfm.checkpoint import config_beside, load_backbone_state
        from voxelfm.config import VoxelFMConfig
        from voxelfm.model import VoxelFM
        from voxelfm.preprocess import PreprocessConfig

        from ctbench.errors import CTBenchError

        from ._common import check_variant, resolve_precision

        check_variant("VoxelFM", variant, VARIANTS, weights, published="base")
        self.hu_window = _check_window(hu_window)
        if isotropy not in ISOTROPY:
            raise CTBenchError(f"voxelfm: isotropy {isotropy!r} is not one of {', '.join(ISOTROPY)}; "
                               f"e.g. --model-option isotropy=exact")
        self.isotropy = isotropy
        self.precision = resolve_precision(precision, "voxelfm", self.default_precision)
        self.variant = variant
        self.device = torch.device(device)
        self.weights_ref = resolve_weights(CARD, weights)
        cfg = VoxelFMConfig.preset(variant)
        if self.weights_ref.is_random:
            with seeded_init():
                model = VoxelFM(cfg)
        else:
            cfg = config_beside(self.weights_ref.path, default=cfg)
            with torch.device("meta"):  # no random init: every tensor comes from the file
                model = VoxelFM(cfg)
            load_backbone_state(model, self.weights_ref.path)
        self.config = cfg
        self.embedding_dim = self.token_dim = cfg.embed_dim  # 864, or the tiny variant's 48
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.autocast = self.precision == "bf16"
        # torch.compile (True: the default inductor backend, or a backend name); the compiled
        # module computes the same function, so the preprocessing id does not change
        self._run = self.model
        if compile:
            backend = compile if isinstance(compile, str) else "inductor"
            self._run = torch.compile(self.model, backend=backend)
        self.max_batch_tokens = max_batch_tokens
        self.preprocess_config = PreprocessConfig(
            hu_min=cfg.hu_min,
            hu_max=cfg.hu_max,
            norm_mean=cfg.norm_mean,
            norm_std=cfg.norm_std,
            crop_background=crop_background,
            max_tokens=max_tokens,
            patch_size=cfg.patch_size,
            isotropy_rtol=ISOTROPY[isotropy],
        )
        window = self.hu_window if isinstance(self.hu_window, str) else list(self.hu_window)
        if window == "reference" and (cfg.hu_min, cfg.hu_max) != HU_WINDOWS["nifti"]:
            window = [cfg.hu_min, cfg.hu_max]  # a config.yaml beside the weights sets its own window
            self.hu_window = (cfg.hu_min, cfg.hu_max)
        #: what shapes the features (recorded in result.json; hashed into the preprocessing id)
        self.settings = {
            "variant": variant,
            **{k: v for k, v in self.preprocess_config.as_dict().items() if k not in ("hu_min", "hu_max")},
            "hu_window": window,
            "hu_window_by_format": {f: list(hu_window_for(self.hu_window, f)) for f in ("nifti", "dicom")},
            "isotropy": isotropy,
            "precision": self.precision,
        }
        self.preprocessing_id = CARD.preprocessing_hash(self.settings)

    def config_for(self, volume: "MetaTensor"):
        """The preprocessing of ``volume``: the HU window follows its source format
        (``meta["format"]``) under the ``reference`` rule."""
        import dataclasses

        meta = getattr(volume, "meta", None) or {}
        lo, hi = hu_window_for(self.hu_window, meta.get("format"))
        return dataclasses.replace(self.preprocess_config, hu_min=lo, hu_max=hi)

    def _prepare(self, volume: "MetaTensor", device=None):
        """(network input ``(D, H, W)`` float32 on ``device`` (default: the model's), its 4x4
        index -> world affine)."""
        from voxelfm.preprocess import preprocess

        return preprocess(volume, self.config_for(volume), device=self.device if device is None else device)

    def preprocess(self, volume: "MetaTensor") -> "MetaTensor":
        """The network input ``(D, H, W)`` as a MetaTensor whose affine maps (d, h, w) -> world
        mm (RAS), tracked through the transpose, crop and resampling."""
        import torch
        from monai.data import MetaTensor

        x, affine = self._prepare(volume)
        return MetaTensor(x, affine=torch.as_tensor(affine, dtype=torch.float64))

    def _forward(self, batch) -> list[Features]:
        import torch

        from voxelfm.preprocess import token_affine

        from ._common import split_features

        inputs = torch.stack([x for x, _ in batch])
        with torch.inference_mode(), torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast
        ):
            out = self._run(inputs)
        d, h, w = out["grid"]
        tokens = out["patch_tokens"].reshape(len(batch), d, h, w, -1).permute(0, 4, 1, 2, 3)
        p = self.config.patch_size
        return split_features(out["cls"], tokens, [token_affine(aff, p) for _, aff in batch])

    def encode(self, volume: "MetaTensor") -> Features:
        return self._forward([self._prepare(volume)])[0]

    def prepare(self, volume: "MetaTensor"):
        """CPU-side preprocessing for extraction workers: (input on CPU, its affine)."""
        return self._prepare(volume, device="cpu")

    def encode_prepared(self, prepared: Sequence) -> list[Features]:
        """Encode outputs of ``prepare`` (moved to the model device), batching equal shapes."""
        return self._encode_groups([(x.to(self.device, non_blocking=True), a) for x, a in prepared])

    def encode_batch(self, volumes: Sequence["MetaTensor"]) -> list[Features]:
        """Preprocess every volume, then run those of equal input shape together (at most
        ``max_batch_tokens`` patch tokens per forward pass, at least one volume)."""
        return self._encode_groups([self._prepare(v) for v in volumes])

    def _encode_groups(self, prepared: list) -> list[Features]:
        groups: dict[tuple, list[int]] = {}
        for i, (x, _) in enumerate(prepared):
            groups.setdefault(tuple(x.shape), []).append(i)
        results: list[Features | None] = [None] * len(prepared)
        p3 = self.config.patch_size**3
        for shape, idx in groups.items():
            per = int(np.prod(shape)) // p3
            size = max(1, self.max_batch_tokens // max(per, 1))
            for s in range(0, len(idx), size):
                chunk = idx[s : s + size]
                for i, feats in zip(chunk, self._forward([prepared[i] for i in chunk])):
                    results[i] = feats
        return results  # type: ignore[return-value]
