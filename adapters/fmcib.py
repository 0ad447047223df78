"""ctbench adapter for FMCIB (AIM-Harvard foundation model for cancer imaging biomarkers): a 3D
ResNet-50 (MONAI, widened x2) pre-trained with contrastive SSL on lesion-centred cubes.

FMCIB is seed-conditioned (:mod:`ctbench.seeds`): it encodes a 50 mm cube centred on a lesion seed
point, which ctbench reads per case from the manifest columns ``seed_x, seed_y, seed_z`` (world
RAS mm; ``--model-option seed_columns=a,b,c`` names others) and hands over in ``volume.meta``.

Cheap to import: only the card lives at module level; torch and MONAI are imported when an
encoder is built. The network is MONAI's ``resnet50``, as the official package builds it, so the
trunk's keys (``conv1.weight``, ``bn1.*``, ``layer{1-4}.{j}.conv{1-3}.weight``, ``...downsample.{0,1}.*``)
load strictly from a plain trunk state dict, the ``trunk_state_dict`` entry of the official
``LoadModel`` files, or a ``state_dict`` entry with the ``model.trunk.`` prefix (heads dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ctbench.card import InputSpec, ModelCard, ParityFacts, WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.seeds import DEFAULT_SEED_COLUMNS, parse_seed_columns, seed_of
from ctbench.types import Features
from ctbench.weights import resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

__all__ = ["CARD", "VARIANTS", "FMCIBArch", "FMCIBEncoder", "build_network", "load_fmcib_state", "crop_box"]

CUBE = 50  # voxels of 1 mm: the official spatial_size (50, 50, 50)
SUBTRAHEND, DIVISOR = -1024.0, 3072.0  # official NormalizeIntensity: (HU + 1024) / 3072, no clipping
STRIDE = 32  # conv1 stride 2, max-pool 2, layers 2-4 stride 2 each
TRUNK_WRAPPER = "trunk_state_dict"  # LoadModel files (the authors' released checkpoints)
LIGHTNING_WRAPPER, LIGHTNING_PREFIX, HEADS_PREFIX = "state_dict", "model.trunk.", "model.heads."
ZENODO = "https://zenodo.org/records/10528450/files/model_weights.torch"

CARD = ModelCard(
    name="fmcib",
    title="FMCIB: foundation model for cancer imaging biomarkers (3D ResNet-50, seed-point cubes)",
    citation=(
        "Pai S, Bontempi D, Hadzic I, et al. Foundation model for cancer imaging biomarkers. "
        "Nature Machine Intelligence 6, 354-367 (2024)"
    ),
    licence="MIT (code, foundation-cancer-image-biomarker 1.0.0); weights on Zenodo record 10528450 (licence "
            "inferred to be the project's MIT, not confirmed from the record)",
    architecture=(
        "MONAI resnet50 (3D, 1 channel, widen_factor 2, conv1 7^3 stride 2, bottleneck blocks 3-4-6-3, "
        "1x1 downsample convs with bias, batch norm, no fc). Embedding: global average of layer4 (the "
        "official 4096-d feature); tokens: the layer4 map (stride 32, 2x2x2 for the 50^3 cube)"
    ),
    parameters=184_477_824,
    embedding_dim=4096,
    token_dim=4096,
    supervision="self-supervised",
    # contrastive SSL (modified SimCLR) on 11,467 lesions of 2,312 DeepLesion patients (NIH Clinical Center)
    pretraining_datasets=("DeepLesion",),
    input=InputSpec(
        orientation="LPS, then the array transposed to (S, P, L)",
        spacing_mm=(1.0, 1.0, 1.0),
        hu_window=None,
        intensity="(HU + 1024) / 3072, not clipped; padding 0 (= -1024 HU)",
        spatial_size=(CUBE, CUBE, CUBE),
        axis_order="(B, 1, S, P, L): a 50 mm cube from the seed's voxel -25 to +24 per axis (clamped at the "
                   "image border, then padded symmetrically to 50^3)",
    ),
    weights=WeightsSpec(hub_repo=None, filename="model_weights.torch", format="torch"),
    parity=ParityFacts(
        reference="foundation-cancer-image-biomarker (github.com/AIM-Harvard/foundation-cancer-image-biomarker)",
        reference_version="1.0.0",
        fixture="fmcib",
        tolerance=1e-5,
        measured=9.0e-8,
        checked="2026-12-05",
        scope=(
            "official get_transforms() (ITKReader, NormalizeIntensity, Spacing 1 mm, LPS, SeedBasedPatchCropd, "
            "transpose, pad) on an oblique LPS NIfTI with a fractional-index seed, and LoadModel on MONAI's "
            "ResNet at the 'test' size: network input (rel 5e-7), pooled embedding (rel 9e-8), layer4 tokens "
            "(fp16-stored, rel 4e-4); reference run with MONAI 1.6.1 (in the package's pin range); MONAI 1.3.2 "
            "resamples the same Spacing call differently (up to 0.11 of the normalised range), so features "
            "depend on the MONAI version as the official pipeline's do; checkpoint layout trunk_state_dict"
        ),
    ),
    group="newer",
    weights_access="public",
    non_commercial=False,
    seed_conditioned=True,
)


@dataclass(frozen=True)
class FMCIBArch:
    """MONAI ResNet settings of one variant (bottleneck blocks, expansion 4)."""

    layers: tuple[int, int, int, int]
    widen_factor: float

    @property
    def features(self) -> int:
        return int(512 * self.widen_factor) * 4


VARIANTS: dict[str, FMCIBArch] = {
    "full": FMCIBArch((3, 4, 6, 3), 2.0),
    # CI stand-in: same stem, strides and preprocessing; one block per stage, 1/16 of the width.
    "test": FMCIBArch((1, 1, 1, 1), 0.125),
}


def build_network(variant: str = "full") -> Any:
    """A randomly initialised trunk of ``variant``: ``resnet50`` with the official keywords for
    ``full``, the same ``ResNet`` at a smaller depth and width for ``test``."""
    from monai.networks.nets import ResNet, resnet50

    arch = VARIANTS[variant]
    kwargs = dict(n_input_channels=1, widen_factor=arch.widen_factor, conv1_t_stride=2, feed_forward=False,
                  bias_downsample=True)
    if variant == "full":
        return resnet50(pretrained=False, **kwargs)
    return ResNet(block="bottleneck", layers=list(arch.layers), block_inplanes=[64, 128, 256, 512], spatial_dims=3,
                  **kwargs)


def trunk_state(state: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The trunk's tensors of an FMCIB checkpoint: a plain trunk state dict, LoadModel's
    ``trunk_state_dict`` entry (``head_state_dict``, a task head, is not the encoder), or a
    ``state_dict`` entry whose ``model.trunk.`` keys are the trunk (``model.heads.`` dropped)."""
    from ._common import select_prefix

    if TRUNK_WRAPPER in state:
        inner = state[TRUNK_WRAPPER]
    elif LIGHTNING_WRAPPER in state and isinstance(state[LIGHTNING_WRAPPER], Mapping):
        inner = select_prefix(state[LIGHTNING_WRAPPER], LIGHTNING_PREFIX, (HEADS_PREFIX,), source=source)
    else:
        inner = state
    if not isinstance(inner, Mapping):
        raise CTBenchError(f"{source}: expected a mapping of tensors for the fmcib trunk, got {type(inner).__name__}")
    return dict(inner)


def load_fmcib_state(module: Any, path: Any, model: str = "fmcib") -> None:
    """Load an FMCIB checkpoint's trunk strictly (tensors only: ``weights_only=True``)."""
    import torch

    from ctbench.weights import load_state_dict

    from ._common import load_strict

    state = trunk_state(load_state_dict(path), str(path))
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CTBenchError(f"{path}: entries {bad[:8]} of the fmcib trunk are not tensors; pass the official "
                           f"model_weights.torch or a trunk state_dict")
    load_strict(module, state, source=str(path), model=model)


def crop_box(index: Sequence[float], shape: Sequence[int], size: int = CUBE) -> tuple[list[int], list[int]]:
    """(start, end) voxel box of the official seed crop: the seed's index truncated towards zero
    (``int``), then ``[i - size//2, i + size//2)`` clamped to the image."""
    centre = [int(v) for v in index]
    start = [max(c - size // 2, 0) for c in centre]
    end = [min(c + size // 2, int(n)) for c, n in zip(centre, shape)]
    return start, end


class FMCIBEncoder:
    """Frozen FMCIB encoder: the 4096-d pooled feature of the 50^3 cube around each case's seed,
    and the layer4 map as tokens (``(4096, 2, 2, 2)``, in the (S, P, L) input's axis order).

    ``seed_columns``: the manifest columns holding the seed (world RAS mm). ``allow_target_seed``:
    run a task whose targets are the seed columns anyway (refused by default: the answer would be
    handed to the model). ``variant="test"`` is a small CI stand-in.
    """

    card = CARD
    default_precision = "fp32"  # the official get_features runs in fp32

    def __init__(
        self,
        weights: str = "auto",
        device: str = "cpu",
        variant: str = "full",
        *,
        seed_columns: str | Sequence[str] = ",".join(DEFAULT_SEED_COLUMNS),
        allow_target_seed: bool = False,
        batch_size: int = 8,
        precision: str | None = None,
    ) -> None:
        import torch

        from ._common import build_module, check_variant, resolve_precision

        check_variant("fmcib", variant, VARIANTS, weights)
        self.seed_columns = parse_seed_columns(seed_columns, "fmcib")
        self.allow_target_seed = bool(allow_target_seed)
        self.precision = resolve_precision(precision, "fmcib", self.default_precision)
        self.autocast = self.precision == "bf16"
        self.variant = variant
        self.arch = VARIANTS[variant]
        self.embedding_dim = self.token_dim = self.arch.features
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.weights_ref = _resolve(weights)
        self.model = build_module(self.weights_ref, lambda: build_network(variant), load_fmcib_state, self.device)
        self.settings = {"variant": variant, "seed_columns": list(self.seed_columns),
                         "allow_target_seed": self.allow_target_seed,
                         **({"precision": self.precision} if self.autocast else {})}
        # seed columns name where the seed comes from; the seed itself is in each case's cache key
        self.preprocessing_id = CARD.preprocessing_hash(
            {"variant": variant, **({"precision": self.precision} if self.autocast else {})})

    def preprocess(self, volume: "MetaTensor") -> "MetaTensor":
        """Canonical volume with a seed -> network input ``(1, 50, 50, 50)`` in (S, P, L) order,
        with its tracked affine: normalise, 1 mm diagonal resampling, LPS, seed crop, transpose, pad."""
        from monai.transforms import NormalizeIntensity, Orientation, SpatialCrop, SpatialPad, Spacing

        from ._common import affine_of, as_volume, preprocess

        seed = seed_of(volume, "fmcib")
        labels = (("L", "R"), ("P", "A"), ("I", "S"))
        x = preprocess(as_volume(volume, "fmcib"), [
            NormalizeIntensity(subtrahend=SUBTRAHEND, divisor=DIVISOR),
            Spacing(pixdim=1.0, padding_mode="zeros", mode="linear", align_corners=True, diagonal=True),
            Orientation(axcodes="LPS", labels=labels),
        ], "fmcib")
        index = np.linalg.inv(affine_of(x)) @ np.r_[seed, 1.0]
        start, end = crop_box(index[:3], x.shape[1:])
        if any(s >= e for s, e in zip(start, end)):
            raise CTBenchError(f"fmcib: the seed point {np.round(seed, 2).tolist()} (world RAS mm) lies outside "
                               f"the image; check the case's seed columns")
        return preprocess(x, [SpatialCrop(roi_start=start, roi_end=end), Orientation(axcodes="SPL", labels=labels),
                              SpatialPad(spatial_size=(CUBE, CUBE, CUBE))], "fmcib")

    def token_affine(self, input_affine: np.ndarray) -> np.ndarray:
        """Token index -> world mm: token ``t`` is centred on input voxel ``32 t`` ("same"-padded
        strided convs and max-pool)."""
        from ._common import token_affine

        return token_affine(input_affine, (STRIDE,) * 3, first_centre=0.0)

    def _forward(self, inputs: Sequence["MetaTensor"]) -> list[Features]:
        from ._common import affine_of, run_batch, split_features

        grids: list = []
        hook = self.model.layer4.register_forward_hook(lambda m, i, out: grids.append(out))
        try:
            embedding = run_batch(self.model, inputs, self.device, self.autocast)  # the official forward
        finally:
            hook.remove()
        return split_features(embedding, grids[0], [self.token_affine(affine_of(x)) for x in inputs])

    def encode(self, volume: "MetaTensor") -> Features:
        return self._forward([self.preprocess(volume)])[0]

    def encode_batch(self, volumes: Sequence["MetaTensor"]) -> list[Features]:
        """Every cube is 50^3: ``batch_size`` volumes per forward pass."""
        from ._common import encode_grouped

        return encode_grouped([self.preprocess(v) for v in volumes], self._forward, self.batch_size)


def _resolve(weights: str) -> Any:
    """``resolve_weights``, with the Zenodo address in the message when ``auto`` finds no file
    (the weights are not on a hub ctbench can pull from)."""
    from ctbench.weights import cached_weights_path

    local = cached_weights_path(CARD)
    if str(weights) == "auto" and (local is None or not local.is_file()):
        raise CTBenchError(
            f"no fmcib weights at {local}: download {CARD.weights.filename} from Zenodo ({ZENODO}) and put it "
            f"there, or pass --weights PATH to it, or use --weights random"
        )
    return resolve_weights(CARD, weights)
