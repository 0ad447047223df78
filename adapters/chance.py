"""``chance``: a control whose features carry no information about the case.

Embedding and tokens are Gaussian noise seeded by the sha256 of the scan (its voxel values, grid
shape and affine): the same scan always gets the same features (cached features and reruns
agree), two scans get independent ones, and nothing about the anatomy reaches a probe. Tokens lie
on a grid of 4x4x4-voxel blocks of the scan with a correct ``token_affine``, so dense tasks run
and can learn only what needs no image: the position prior of a target (localisation), the
commonest label (segmentation). A probe on these features must score at chance; the self-test's
ladder puts every model above it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from ctbench.card import InputSpec, ModelCard, WeightsSpec
from ctbench.types import Features

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

__all__ = ["CARD", "ChanceEncoder", "scan_seed"]

POOL = 4  # voxels per token along each axis
EMBEDDING_DIM = 32
TOKEN_DIM = 4

CARD = ModelCard(
    group="baseline", weights_access="none",
    name="chance",
    title="Chance control (seeded noise, no information about the case)",
    citation="ctbench built-in reference (no publication)",
    licence="Apache-2.0",
    architecture=(
        "no network: standard Gaussian noise seeded by the sha256 of the scan's voxels, shape and "
        "affine. Embedding: 32 values; tokens: 4 channels per 4x4x4-voxel block of the scan"
    ),
    parameters=0,
    embedding_dim=EMBEDDING_DIM,
    token_dim=TOKEN_DIM,
    supervision="none",
    input=InputSpec(
        orientation="native", spacing_mm="native", hu_window=None,
        intensity="not used: the voxels only seed the noise",
        spatial_size="native; tokens: one per 4x4x4-voxel block (edges rounded up)",
        axis_order="(X, Y, Z) as stored",
    ),
    weights=WeightsSpec(format="none"),
)


def scan_seed(volume: "MetaTensor") -> int:
    """A 64-bit seed from the scan's float32 voxel values, grid shape and affine."""
    arr = np.ascontiguousarray(np.asarray(volume.detach().cpu().numpy(), dtype=np.float32))
    affine = np.ascontiguousarray(np.asarray(volume.affine, dtype=np.float64))
    h = hashlib.sha256(np.asarray(arr.shape, dtype=np.int64).tobytes() + affine.tobytes() + arr.tobytes())
    return int.from_bytes(h.digest()[:8], "little")


class ChanceEncoder:
    """Seeded-noise features (see the module docstring); no weights."""

    card = CARD

    def __init__(self, weights: str = "auto", device: str = "cpu") -> None:
        from ctbench.weights import resolve_weights

        self.weights_ref = resolve_weights(CARD, weights)  # no weights: "none", a file is refused
        self.device = device  # numpy on the CPU whatever the run's device
        self.preprocessing_id = CARD.preprocessing_hash({"pool": POOL, "seed": "sha256"})

    def encode(self, volume: "MetaTensor") -> Features:
        """Noise embedding and token grid of one scan, the same every time for the same scan."""
        from ctbench.adapters._common import as_volume

        volume = as_volume(volume, "chance")
        rng = np.random.default_rng(scan_seed(volume))
        grid = tuple(-(-int(n) // POOL) for n in volume.shape[1:])
        scale = np.diag([POOL, POOL, POOL, 1.0])
        scale[:3, 3] = (POOL - 1) / 2.0  # block b is centred at voxel POOL * b + (POOL - 1) / 2
        affine = np.asarray(volume.affine, dtype=np.float64) @ scale
        embedding = rng.standard_normal(EMBEDDING_DIM, dtype=np.float32)
        tokens = rng.standard_normal((TOKEN_DIM, *grid), dtype=np.float32)
        return Features(embedding, tokens, affine)
