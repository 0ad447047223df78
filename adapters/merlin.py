"""ctbench adapter for Merlin's image encoder (StanfordMIMI/Merlin): an I3ResNet, i.e. a
torchvision-style ResNet-152 inflated to 3D, trained with radiology reports and EHR codes.

Cheap to import: only the card lives at module level; torch and MONAI are imported when an
encoder is built. The network below is written for ctbench with the reference's key names,
so the official checkpoint loads with ``strict=True`` after stripping ``encode_image.i3_resnet.``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ctbench.card import InputSpec, ModelCard, ParityFacts, WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.types import Features
from ctbench.weights import resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

__all__ = ["CARD", "VARIANTS", "MerlinArch", "MerlinEncoder", "build_network", "CHECKPOINT_PREFIX"]

CHECKPOINT_PREFIX = "encode_image.i3_resnet."
# Keys of the official CLIP checkpoint that are not the image encoder (documented, dropped).
IGNORED_PREFIXES = ("encode_text.", "logit_scale")

CARD = ModelCard(
    group="paper",
    name="merlin",
    title="Merlin: CT vision-language foundation model (I3ResNet image encoder)",
    citation=(
        "Blankemeier L, Kumar A, et al. Merlin: a computed tomography vision-language foundation "
        "model and dataset. Nature (2026), doi:10.1038/s41586-026-10181-8; arXiv:2406.06512"
    ),
    licence="MIT",
    architecture=(
        "I3ResNet: ResNet-152 (bottlenecks 3-8-36-3) inflated to 3D, 3x7x7 stem, 3x3x3 bottleneck "
        "convs, grey input repeated to 3 channels; 1x1x1 conv heads: EHR classifier 1692, "
        "contrastive 512. Embedding: mean of layer4; tokens: layer4 map, stride 32x32x16 (X, Y, Z)"
    ),
    parameters=121_882_204,
    embedding_dim=2048,
    token_dim=2048,
    supervision="language",
    pretraining_datasets=(
        "Stanford abdominal CT: 15,331 CTs with radiology reports and EHR diagnosis codes "
        "(Merlin Abdominal CT Dataset)",
    ),
    input=InputSpec(
        orientation="RAS",
        spacing_mm=(1.5, 1.5, 3.0),
        hu_window=(-1000.0, 1000.0),
        intensity="clip(HU, -1000, 1000) scaled to [0, 1]; bilinear resampling; pad value 0",
        spatial_size=(224, 224, 160),
        axis_order="(B, 1, X, Y, Z) RAS; the network permutes to (B, 3, Z, X, Y)",
    ),
    weights=WeightsSpec(
        hub_repo="stanfordmimi/Merlin",
        filename="i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt",
        revision=None,
        sha256=None,
        format="torch",
    ),
    parity=ParityFacts(
        reference="merlin-vlm (github.com/StanfordMIMI/Merlin)",
        reference_version="0.0.7",
        fixture="merlin",
        tolerance=1e-5,
        measured=0.0,
        checked="2026-12-05",
        scope=(
            "native preprocessing (RAS, 1.5x1.5x3 mm, HU window, 224x224x160) and its affine "
            "bit-identical; embedding and layer4 tokens (fp16-stored, rel <= 1e-3) of the 'small' "
            "variant (full widths and heads, one bottleneck per stage) on the central 64x64x32 "
            "box; released CLIP checkpoint layout"
        ),
    ),
)


@dataclass(frozen=True)
class MerlinArch:
    """Network and native-input settings of one variant."""

    blocks: tuple[int, int, int, int]
    width: int  # stem channels; stage s has width * 2**s bottleneck planes, expansion 4
    classes: int  # EHR phenotype classifier outputs
    contrastive: int  # contrastive head outputs
    input_size: tuple[int, int, int]  # (X, Y, Z) after pad + centre crop

    @property
    def features(self) -> int:
        return self.width * 8 * 4


VARIANTS: dict[str, MerlinArch] = {
    "full": MerlinArch((3, 8, 36, 3), 64, 1692, 512, (224, 224, 160)),
    # CI stand-in: one bottleneck per stage, 1/8 of the width, a 4x smaller native box.
    "test": MerlinArch((1, 1, 1, 1), 8, 16, 32, (96, 96, 64)),
    # Parity stand-in: the full widths and heads with one bottleneck per stage, the smallest
    # network the reference's I3ResNet builds (its heads take 2048 features), so that the
    # suite can compare it with the official code quickly (tests/parity).
    "small": MerlinArch((1, 1, 1, 1), 64, 1692, 512, (224, 224, 160)),
}

# Downsampling of the layer4 map relative to the (X, Y, Z) network input: the stem keeps the
# slice axis (stride 1 in Z), the max-pool and layers 2-4 halve every axis.
STRIDES = (32, 32, 16)


@functools.lru_cache(maxsize=None)
def _classes() -> tuple[type, type]:
    """Define the torch modules on first use so that importing this adapter stays cheap."""
    import torch
    from torch import nn

    class Bottleneck3d(nn.Module):
        """ResNet v1.5 bottleneck in 3D: 1x1x1 -> 3x3x3 (stride) -> 1x1x1, x4 expansion."""

        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            out = planes * 4
            self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm3d(planes)
            self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm3d(planes)
            self.conv3 = nn.Conv3d(planes, out, 1, bias=False)
            self.bn3 = nn.BatchNorm3d(out)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or inplanes != out:
                self.downsample = nn.Sequential(
                    nn.Conv3d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm3d(out)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            skip = x if self.downsample is None else self.downsample(x)
            return self.relu(y + skip)

    class I3ResNet(nn.Module):
        """Inflated ResNet; ``forward`` takes ``(B, 1, X, Y, Z)`` and returns the pooled layer4
        features ``(B, C)`` and the layer4 map ``(B, C, X', Y', Z')``."""

        def __init__(self, arch: MerlinArch) -> None:
            super().__init__()
            w = arch.width
            self.conv1 = nn.Conv3d(3, w, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
            self.bn1 = nn.BatchNorm3d(w)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
            inplanes = w
            for i, n in enumerate(arch.blocks):
                planes = w * 2**i
                stride = 1 if i == 0 else 2
                blocks = []
                for b in range(n):
                    blocks.append(Bottleneck3d(inplanes, planes, stride if b == 0 else 1))
                    inplanes = planes * 4
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.classifier = nn.Conv3d(arch.features, arch.classes, 1)
            self.contrastive_head = nn.Conv3d(arch.features, arch.contrastive, 1)
            # Random weights = PyTorch's default module init: it keeps eval-mode activations
            # O(1) through the 50 residual blocks (He init makes them reach ~1e6, past fp16).

        def feature_map(self, x: torch.Tensor) -> torch.Tensor:
            """``(B, 1, X, Y, Z)`` -> layer4 map ``(B, C, Z', X', Y')`` (the network's own layout)."""
            x = x.permute(0, 1, 4, 2, 3).expand(-1, 3, -1, -1, -1)  # depth first, grey -> 3 ch
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for i in range(1, 5):
                x = getattr(self, f"layer{i}")(x)
            return x

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            fmap = self.feature_map(x)
            return fmap.mean(dim=(2, 3, 4)), fmap.permute(0, 1, 3, 4, 2)

        def heads(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(contrastive ``(B, 512)``, EHR phenotype logits ``(B, 1692)``) from pooled features."""
            x = pooled[:, :, None, None, None]
            return self.contrastive_head(x).flatten(1), self.classifier(x).flatten(1)

    return Bottleneck3d, I3ResNet


def build_network(variant: str = "full") -> Any:
    """A randomly initialised I3ResNet of ``variant`` (call under ``seeded_init`` to reproduce)."""
    return _classes()[1](_arch(variant))


def _arch(variant: str) -> MerlinArch:
    if variant not in VARIANTS:
        raise CTBenchError(f"unknown Merlin variant {variant!r}; choose one of {tuple(VARIANTS)}")
    return VARIANTS[variant]


def load_merlin_state(module: Any, path: Any, model: str = "merlin") -> None:
    """Load an official Merlin checkpoint (or a bare I3ResNet state_dict) strictly: keys under
    ``encode_image.i3_resnet.`` are kept and stripped, ``encode_text.*`` / ``logit_scale`` dropped."""
    from ._common import load_strict, read_checkpoint, select_prefix

    state = read_checkpoint(path, model)
    state = select_prefix(state, CHECKPOINT_PREFIX, IGNORED_PREFIXES, source=str(path))
    load_strict(module, state, source=str(path), model=model)


class MerlinEncoder:
    """Frozen Merlin image encoder: 2048-d mean of layer4 and the layer4 map as tokens.

    Tokens are stored ``(2048, X', Y', Z')`` (7 x 7 x 10 for the native input) in the RAS
    input's axis order. ``variant="test"`` is a small stand-in for CI; ``input_size`` overrides
    the native (X, Y, Z) box (multiples of 32, 32, 16), e.g. to run the full network cheaply.
    """

    card = CARD
    default_precision = "fp32"  # the official Merlin inference runs in fp32

    def __init__(
        self,
        weights: str = "auto",
        device: str = "cpu",
        variant: str = "full",
        *,
        input_size: tuple[int, int, int] | None = None,
        batch_size: int = 4,
        precision: str | None = None,
    ) -> None:
        import torch

        from ._common import build_module, check_variant, resolve_precision

        check_variant("Merlin", variant, VARIANTS, weights)
        self.precision = resolve_precision(precision, "merlin", self.default_precision)
        self.autocast = self.precision == "bf16"
        arch = VARIANTS[variant]
        size = tuple(int(s) for s in (input_size or arch.input_size))
        if len(size) != 3 or any(s <= 0 or s % st for s, st in zip(size, STRIDES)):
            raise CTBenchError(f"Merlin input_size must be 3 positive multiples of {STRIDES}, got {size}")
        self.variant = variant
        self.arch = arch
        self.input_size: tuple[int, int, int] = size  # type: ignore[assignment]
        self.embedding_dim = arch.features
        self.token_dim = arch.features
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.weights_ref = resolve_weights(CARD, weights)
        self.model = build_module(self.weights_ref, lambda: build_network(variant), load_merlin_state, self.device)
        self.preprocessing_id = CARD.preprocessing_hash(
            {"variant": variant, **asdict(arch), "input_size": list(size), "strides": list(STRIDES),
             **({"precision": self.precision} if self.autocast else {})}
        )

    def transforms(self) -> list:
        """The MONAI preprocessing of the reference (``merlin/data/monai_transforms.py``)."""
        from monai.transforms import CenterSpatialCrop, Orientation, ScaleIntensityRange, Spacing, SpatialPad

        spec = CARD.input
        lo, hi = spec.hu_window  # type: ignore[misc]
        return [
            Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacing(pixdim=spec.spacing_mm, mode="bilinear"),
            ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
            SpatialPad(spatial_size=self.input_size),
            CenterSpatialCrop(roi_size=self.input_size),
        ]

    def preprocess(self, volume: "MetaTensor") -> "MetaTensor":
        """Canonical volume -> network input ``(1, X, Y, Z)`` with its tracked RAS affine."""
        from ._common import preprocess

        return preprocess(volume, self.transforms(), "merlin")

    def token_affine(self, input_affine: np.ndarray) -> np.ndarray:
        """Token index (X', Y', Z') -> world mm for a network input with ``input_affine``: token
        ``t`` is centred on input voxel ``stride * t`` (every strided conv / pool is "same"-padded)."""
        from ._common import token_affine

        return token_affine(input_affine, STRIDES, first_centre=0.0)

    def _forward(self, inputs: Sequence["MetaTensor"]) -> list[Features]:
        from ._common import affine_of, run_batch, split_features

        pooled, tokens = run_batch(self.model, inputs, self.device, self.autocast)
        return split_features(pooled, tokens, [self.token_affine(affine_of(x)) for x in inputs])

    def encode(self, volume: "MetaTensor") -> Features:
        return self._forward([self.preprocess(volume)])[0]

    def encode_batch(self, volumes: Sequence["MetaTensor"]) -> list[Features]:
        """Every input has the same native size, so volumes run ``batch_size`` at a time."""
        from ._common import encode_grouped

        return encode_grouped([self.preprocess(v) for v in volumes], self._forward, self.batch_size)
