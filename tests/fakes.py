"""A small deterministic encoder for engine tests: HU histogram + coarse token grid."""

from __future__ import annotations

import numpy as np

from ctbench.card import InputSpec, ModelCard
from ctbench.types import Features
from ctbench.weights import WeightsRef

CARD = ModelCard(
    name="test-histogram",
    title="HU histogram test encoder",
    citation="none",
    licence="CC0-1.0",
    architecture="fixed HU histogram",
    parameters=0,
    embedding_dim=24,
    token_dim=1,
    supervision="none",
    input=InputSpec(
        orientation="native", spacing_mm="native", hu_window=(-1000, 1000),
        intensity="histogram fractions", spatial_size="native", axis_order="(X, Y, Z)",
    ),
)
BINS = np.linspace(-1000, 1000, CARD.embedding_dim + 1)


class HistogramEncoder:
    """Embedding = fraction of voxels in 24 HU bins; tokens = 4x4x4-voxel block means."""

    card = CARD

    def __init__(self, weights: str = "random", device: str = "cpu") -> None:
        self.weights_ref = WeightsRef(None, "random")
        self.preprocessing_id = CARD.preprocessing_hash()
        self.calls = 0

    def encode(self, volume) -> Features:
        self.calls += 1
        arr = np.asarray(volume)[0]
        hist, _ = np.histogram(np.clip(arr, -999, 999), bins=BINS)
        emb = hist / arr.size
        s = 4
        X, Y, Z = (d // s * s for d in arr.shape)
        grid = arr[:X, :Y, :Z].reshape(X // s, s, Y // s, s, Z // s, s).mean(axis=(1, 3, 5))
        scale = np.diag([s, s, s, 1.0])
        scale[:3, 3] = (s - 1) / 2
        affine = np.asarray(volume.affine, dtype=np.float64) @ scale
        return Features(emb, grid[None], affine)
