"""ctbench adapter for CT-FM (project-lighter/CT-FM): MONAI's SegResEncoder pre-trained with
intra-sample SimCLR on 148k CT scans from the Imaging Data Commons.

Cheap to import: only the card lives at module level; torch and MONAI are imported when an
encoder is built. The network is MONAI's own ``SegResEncoder``, so the published safetensors
file (``conv_init.weight``, ``layers.{i}.blocks.{j}.*``, ``layers.{i}.downsample.weight``) loads
strictly; a full CT-FM SegResNet file (``encoder.*`` + decoder ``up_layers.*``) loads too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ctbench.card import InputSpec, ModelCard, ParityFacts, WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.types import Features
from ctbench.weights import resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

__all__ = ["CARD", "VARIANTS", "CTFMArch", "CTFMEncoder", "build_network", "load_ctfm_state"]

ENCODER_PREFIX = "encoder."  # the full SegResNet(DS) file nests the encoder here
IGNORED_PREFIXES = ("up_layers.",)  # its decoder, dropped for feature extraction

CARD = ModelCard(
    group="newer",
    name="ct-fm",
    title="CT-FM: 3D image-based CT foundation model (SegResNet encoder)",
    citation=(
        "Pai S, Hadzic I, Bontempi D, et al. Vision Foundation Models for Computed Tomography. "
        "arXiv:2501.09001 (2025)"
    ),
    licence="Apache-2.0",
    architecture=(
        "MONAI SegResEncoder (3D, 1 channel, init_filters 32, blocks_down 1-2-2-4-4, batch norm, "
        "ReLU): 5 levels of pre-activation residual blocks, 32-512 channels. Embedding: mean of "
        "the last map; tokens: last map (512 channels, stride 16)"
    ),
    parameters=77_760_992,
    embedding_dim=512,
    token_dim=512,
    supervision="self-supervised",
    # 148,000 CT scans of the Imaging Data Commons: the collection's normalised name, so that
    # leaderboards flag tasks on datasets IDC holds (NSCLC-Radiomics, LIDC-IDRI/LUNA16, ...).
    pretraining_datasets=("IDC",),
    input=InputSpec(
        orientation="SPL",
        spacing_mm="native (no resampling)",
        hu_window=(-1024.0, 2048.0),
        intensity="clip(HU, -1024, 2048) scaled to [0, 1]",
        spatial_size="foreground crop (voxels above -1024 HU, no margin); no resizing",
        axis_order="(B, 1, S, P, L)",
    ),
    weights=WeightsSpec(
        hub_repo="project-lighter/ct_fm_feature_extractor",
        filename="model.safetensors",
        revision="23e05e9c3398ed305339d144e3642bbcf9ccc46f",
        sha256=None,
        format="safetensors",
    ),
    parity=ParityFacts(
        reference="lighter-zoo SegResEncoder (github.com/project-lighter/CT-FM)",
        reference_version="0.1.3",
        fixture="ctfm",
        tolerance=1e-5,
        measured=0.0,
        checked="2026-12-05",
        scope=(
            "model card preprocessing (SPL, HU window, foreground crop; reference run with MONAI "
            "1.4.0): network input and affine bit-identical; embedding and last-map tokens "
            "(fp16-stored, rel <= 1e-3) of the 'test' size (8 filters, one block per level); "
            "hub safetensors layout"
        ),
    ),
)


@dataclass(frozen=True)
class CTFMArch:
    """SegResEncoder settings of one variant."""

    init_filters: int
    blocks_down: tuple[int, ...]

    @property
    def features(self) -> int:
        return self.init_filters * 2 ** (len(self.blocks_down) - 1)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.blocks_down) - 1)


VARIANTS: dict[str, CTFMArch] = {
    "full": CTFMArch(32, (1, 2, 2, 4, 4)),
    # CI stand-in: same 5 levels (same stride 16), one block each, a quarter of the width.
    "test": CTFMArch(8, (1, 1, 1, 1, 1)),
}


def _arch(variant: str) -> CTFMArch:
    if variant not in VARIANTS:
        raise CTBenchError(f"unknown CT-FM variant {variant!r}; choose one of {tuple(VARIANTS)}")
    return VARIANTS[variant]


def build_network(variant: str = "full") -> Any:
    """A randomly initialised SegResEncoder of ``variant`` (MONAI's default init)."""
    from monai.networks.nets.segresnet_ds import SegResEncoder

    arch = _arch(variant)
    return SegResEncoder(spatial_dims=3, in_channels=1, init_filters=arch.init_filters, blocks_down=arch.blocks_down)


def load_ctfm_state(module: Any, path: Any, model: str = "ct-fm") -> None:
    """Load the feature-extractor file (unprefixed) or a full SegResNet file (``encoder.``
    prefix; decoder keys dropped) strictly into a SegResEncoder."""
    from ._common import load_strict, read_checkpoint, select_prefix

    state = read_checkpoint(path, model)
    state = select_prefix(state, ENCODER_PREFIX, IGNORED_PREFIXES, source=str(path))
    load_strict(module, state, source=str(path), model=model)


class CTFMEncoder:
    """Frozen CT-FM encoder: 512-d mean of the last feature map, and that map as tokens.

    Tokens are stored ``(512, S', P', L')`` in the SPL network input's axis order (stride 16).
    ``spacing_mm`` optionally resamples first (not the official pipeline, which keeps native
    spacing; recorded in the preprocessing id). ``variant="test"`` is a small CI stand-in.
    """

    card = CARD
    default_precision = "fp32"  # the official lighter-zoo example runs in fp32

    def __init__(
        self,
        weights: str = "auto",
        device: str = "cpu",
        variant: str = "full",
        *,
        spacing_mm: tuple[float, float, float] | None = None,
        batch_size: int = 4,
        precision: str | None = None,
    ) -> None:
        import torch

        from ._common import build_module, check_variant, resolve_precision

        check_variant("CT-FM", variant, VARIANTS, weights)
        self.precision = resolve_precision(precision, "ct-fm", self.default_precision)
        self.autocast = self.precision == "bf16"
        arch = VARIANTS[variant]
        self.variant = variant
        self.arch = arch
        self.spacing_mm = tuple(float(s) for s in spacing_mm) if spacing_mm else None
        self.embedding_dim = arch.features
        self.token_dim = arch.features
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.weights_ref = resolve_weights(CARD, weights)
        self.model = build_module(self.weights_ref, lambda: build_network(variant), load_ctfm_state, self.device)
        self.preprocessing_id = CARD.preprocessing_hash(
            {
                "variant": variant,
                "init_filters": arch.init_filters,
                "blocks_down": list(arch.blocks_down),
                "spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
                **({"precision": self.precision} if self.autocast else {}),
            }
        )

    def transforms(self) -> list:
        """The model card's MONAI preprocessing (plus the optional resampling)."""
        from monai.transforms import CropForeground, Orientation, ScaleIntensityRange, Spacing

        lo, hi = CARD.input.hu_window  # type: ignore[misc]
        steps: list = [Orientation(axcodes="SPL", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
        if self.spacing_mm:
            steps.append(Spacing(pixdim=self.spacing_mm, mode="bilinear"))
        steps += [ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True), CropForeground()]
        return steps

    def preprocess(self, volume: "MetaTensor") -> "MetaTensor":
        """Canonical volume -> network input ``(1, S, P, L)`` with its tracked affine."""
        from ._common import preprocess

        x = preprocess(volume, self.transforms(), "ct-fm")
        if min(x.shape[1:]) == 0:
            raise CTBenchError("ct-fm: the volume has no voxel above -1024 HU (nothing to crop to); check the HU values")
        return x

    def token_affine(self, input_affine: np.ndarray) -> np.ndarray:
        """Token index -> world mm for a network input with ``input_affine``: token ``t`` is
        centred on input voxel ``16 * t`` (stride-2, padding-1 3x3x3 convs)."""
        from ._common import token_affine

        return token_affine(input_affine, (self.arch.stride,) * 3, first_centre=0.0)

    def _forward(self, inputs: Sequence["MetaTensor"]) -> list[Features]:
        from ._common import affine_of, run_batch, split_features

        last = run_batch(self.model, inputs, self.device, self.autocast)[-1]
        affines = [self.token_affine(affine_of(x)) for x in inputs]
        return split_features(last.mean(dim=(2, 3, 4)), last, affines)

    def encode(self, volume: "MetaTensor") -> Features:
        return self._forward([self.preprocess(volume)])[0]

    def encode_batch(self, volumes: Sequence["MetaTensor"]) -> list[Features]:
        """Foreground crops differ in size: volumes of equal input shape run ``batch_size`` at a time."""
        from ._common import encode_grouped

        return encode_grouped([self.preprocess(v) for v in volumes], self._forward, self.batch_size)
