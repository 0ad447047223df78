"""``thumbnail``: a deterministic baseline with no weights. The volume is shrunk to a coarse,
fixed-size RAS grid; its 2x2x2 blocks are the tokens (8 channels: the block's 8 values), and the
block means, flattened, are the embedding. A board row for "what a tiny picture of the scan
already gives".

Preprocessing (MONAI transforms; the affine is tracked through every step):
Orientation RAS -> clip HU to [-1000, 1000] and scale to [0, 1] -> Gaussian anti-aliasing
(sigma per axis ``(8 mm / spacing - 1) / 2`` voxels, none where the spacing is already >= 8 mm) ->
Spacing to 8 mm isotropic (bilinear) -> pad (with air, 0) or crop around the centre to 32^3
(a 256 mm cube).

Outputs: tokens ``(8, 16, 16, 16)`` in RAS axis order, token ``t`` = the 2x2x2 block of 8 mm cells
at grid index ``2t .. 2t+1`` (channel ``4a + 2b + c`` = cell ``2t + (a, b, c)``), like non-overlapping
patch tokens with an identity embedding; ``token_affine`` = the grid affine at stride 2, so token
``t`` is centred at grid index ``2t + 0.5`` (16 mm tokens: 8x fewer tokens than the grid, which
keeps dense heads affordable). Embedding ``(4096,)`` = the block means, flattened in RAS order.

Cheap to import: numpy and the card only; torch and MONAI are imported when encoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ctbench.card import InputSpec, ModelCard, WeightsSpec
from ctbench.types import Features
from ctbench.weights import resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

__all__ = ["CARD", "SPACING_MM", "GRID", "POOL", "ThumbnailEncoder"]

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # world axes of the canonical volume
HU_WINDOW = (-1000.0, 1000.0)
SPACING_MM = 8.0
GRID = 32  # grid cells per axis: a 256 mm cube
POOL = 2  # a token is a POOL^3 block of grid cells (16 mm); the embedding is the block means
EMBEDDING_DIM = (GRID // POOL) ** 3
TOKEN_DIM = POOL**3

CARD = ModelCard(
    group="baseline", weights_access="none",
    name="thumbnail",
    title="Coarse thumbnail of the volume (baseline, no weights)",
    citation="ctbench baseline (no publication): the scan resampled to a coarse fixed grid",
    licence="Apache-2.0",
    architecture=(
        f"no network. Orientation RAS; HU clipped to [{HU_WINDOW[0]:g}, {HU_WINDOW[1]:g}] and scaled to "
        f"[0, 1]; Gaussian anti-aliasing (sigma (8 / spacing - 1) / 2 voxels per axis); Spacing "
        f"{SPACING_MM:g} mm isotropic (bilinear); centred pad (air) / crop to {GRID}^3. Tokens: its {POOL}^3 "
        f"blocks ({SPACING_MM * POOL:g} mm, {TOKEN_DIM} channels = the block's cells); embedding: the block "
        f"means, flattened ({EMBEDDING_DIM})"
    ),
    parameters=0,
    embedding_dim=EMBEDDING_DIM,
    token_dim=TOKEN_DIM,
    supervision="none",
    pretraining_datasets=(),
    input=InputSpec(
        orientation="RAS",
        spacing_mm=(SPACING_MM, SPACING_MM, SPACING_MM),
        hu_window=HU_WINDOW,
        intensity="clip(HU, -1000, 1000) scaled to [0, 1], then Gaussian anti-aliasing",
        spatial_size=(GRID, GRID, GRID),
        axis_order="(1, R, A, S)",
    ),
    weights=WeightsSpec(format="none"),
)


def antialias_sigma(spacing: np.ndarray) -> list[float]:
    """Gaussian sigma in voxels per axis before resampling ``spacing`` (mm) to :data:`SPACING_MM`:
    ``(factor - 1) / 2`` for a downsampling factor (scikit-image's rule), 0 where none."""
    factor = SPACING_MM / np.asarray(spacing, dtype=np.float64)
    return [float(max(0.0, (f - 1.0) / 2.0)) for f in factor]


class ThumbnailEncoder:
    """The ``thumbnail`` baseline: deterministic, no weights, tokens with a tracked affine."""

    card = CARD

    def __init__(self, weights: str = "auto", device: str = "cpu") -> None:
        self.weights_ref = resolve_weights(CARD, weights)  # no weights: "none", a file is refused
        self.device = device  # a few small CPU transforms whatever the run's device
        self.embedding_dim = EMBEDDING_DIM
        self.token_dim = TOKEN_DIM
        self.preprocessing_id = CARD.preprocessing_hash(
            {"spacing_mm": SPACING_MM, "grid": GRID, "pool": POOL, "antialias": "(f - 1) / 2", "tokens": "blocks"})

    def preprocess(self, volume: "MetaTensor") -> "MetaTensor":
        """Canonical volume -> the ``(1, 32, 32, 32)`` RAS grid, with its tracked affine."""
        from monai.transforms import GaussianSmooth, Orientation, ResizeWithPadOrCrop, ScaleIntensityRange, Spacing

        from ._common import affine_of, preprocess

        lo, hi = HU_WINDOW
        x = preprocess(volume, [Orientation(axcodes="RAS", labels=RAS_LABELS),
                                ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)],
                       "thumbnail")
        sigma = antialias_sigma(np.linalg.norm(affine_of(x)[:3, :3], axis=0))
        steps = [GaussianSmooth(sigma=sigma)] if max(sigma) > 0 else []
        steps += [Spacing(pixdim=(SPACING_MM,) * 3, mode="bilinear", padding_mode="border"),
                  ResizeWithPadOrCrop((GRID,) * 3, mode="constant", value=0.0)]
        return preprocess(x, steps, "thumbnail")

    def encode(self, volume: "MetaTensor") -> Features:
        from ._common import affine_of, token_affine

        x = self.preprocess(volume)
        n = GRID // POOL
        blocks = x.detach().cpu().numpy().astype(np.float32)[0].reshape(n, POOL, n, POOL, n, POOL)
        tokens = blocks.transpose(1, 3, 5, 0, 2, 4).reshape(TOKEN_DIM, n, n, n)  # channel = offset in block
        return Features(tokens.mean(axis=0).reshape(-1), tokens, token_affine(affine_of(x), (POOL,) * 3))
