"""ctbench adapter for VoxelFM (arXiv 2604.04133), the paper's own model.

Cheap to import: only the card lives at module level; torch and the ``voxelfm`` package are
imported when an encoder is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ctbench.card import InputSpec, ModelCard, WeightsSpec
from ctbench.types import Features
from ctbench.weights import resolve_weights, seeded_init

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

__all__ = ["CARD", "VoxelFMEncoder"]

CARD = ModelCard(
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
        spacing_mm="isotropic max(min spacing, 0.75); no resampling when already isotropic",
        hu_window=(-1000.0, 1900.0),
        intensity="(clip(HU, -1000, 1900) + 573.8) / 461.3",
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
)

VARIANTS = ("base", "tiny")


class VoxelFMEncoder:
    """Frozen VoxelFM backbone: CLS embedding (864-d) and the patch-token grid (864, d, h, w).

    ``variant="tiny"`` is a small random-architecture stand-in for tests (same preprocessing).
    ``crop_background`` / ``max_tokens`` default to the reference evaluation pipeline.
    On CUDA the forward runs under bf16 autocast (SDPA attention); equal input shapes are
    batched by ``encode_batch``; ``compile=True`` wraps the backbone in ``torch.compile``
    (one compilation per input shape).
    """

    card = CARD

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
    ) -> None:
        import torch

        from voxelfm.checkpoint import config_beside, load_backbone_state
        from voxelfm.config import VoxelFMConfig
        from voxelfm.model import VoxelFM
        from voxelfm.preprocess import PreprocessConfig

        from ._common import check_variant

        check_variant("VoxelFM", variant, VARIANTS, weights, published="base")
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
        self.autocast = self.device.type == "cuda"
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
        )
        self.preprocessing_id = CARD.preprocessing_hash(
            {
                "variant": variant,
                **self.preprocess_config.as_dict(),
                "compute": "bf16-autocast" if self.autocast else "fp32",
            }
        )

    def _prepare(self, volume: "MetaTensor"):
        """(network input ``(D, H, W)`` float32 on the model device, its 4x4 index -> world
        affine)."""
        from voxelfm.preprocess import preprocess

        return preprocess(volume, self.preprocess_config, device=self.device)

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
        from voxelfm.preprocess import preprocess

        return preprocess(volume, self.preprocess_config, device="cpu")

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
