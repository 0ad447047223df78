"""A small deterministic encoder for engine tests: HU histogram + coarse token grid."""

from __future__ import annotations

import zlib

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


class OracleEncoder:
    """Embedding = the case's true phantom measurements (looked up by image file) + noise.

    Stands in for a perfect encoder: the engine must learn from it, and must not from shuffled
    labels.
    """

    card = CARD.model_copy(update={"name": "test-oracle", "embedding_dim": 8})
    table: dict[str, np.ndarray] = {}
    salt = 0

    def __init__(self, weights: str = "random", device: str = "cpu") -> None:
        import hashlib

        self.weights_ref = WeightsRef(None, "random")
        blob = b"".join(k.encode() + v.tobytes() for k, v in sorted(self.table.items()))
        self.preprocessing_id = hashlib.sha256(blob + bytes([self.salt])).hexdigest()[:16]

    def encode(self, volume) -> Features:
        from pathlib import Path

        name = Path(volume.meta["filename_or_obj"]).name
        truth = self.table[name]
        noise = np.random.default_rng(zlib.crc32(name.encode()) + self.salt).normal(0, 0.1, truth.shape)
        return Features(truth + noise)


def oracle_table(manifest, columns) -> dict[str, np.ndarray]:
    """Image file name -> standardised ground-truth vector for ``OracleEncoder``."""
    from pathlib import Path

    values = manifest[list(columns)].fillna(0).to_numpy(dtype=np.float64)
    values = (values - values.mean(0)) / (values.std(0) + 1e-9)
    return {Path(img).name: v for img, v in zip(manifest["image"], values)}


class ConstantEncoder:
    """The same embedding and token grid for every scan (a collapsed encoder): whatever the
    probe, its predictions cannot depend on the case, so every metric must sit at chance. The
    2^3 token grid spans the scan (its affine follows the scan's, so dense tasks can place it)."""

    card = CARD.model_copy(update={"name": "test-constant", "embedding_dim": 8})

    def __init__(self, weights: str = "random", device: str = "cpu") -> None:
        self.weights_ref = WeightsRef(None, "random")
        self.preprocessing_id = self.card.preprocessing_hash()

    def encode(self, volume) -> Features:
        shape = np.asarray(volume.shape[1:], dtype=np.float64)
        scale = np.diag([*(shape / 2), 1.0])
        scale[:3, 3] = (shape / 2 - 1) / 2  # token centres at the centres of the two halves
        affine = np.asarray(volume.affine, dtype=np.float64) @ scale
        return Features(np.full(8, 0.5, dtype=np.float32), np.ones((4, 2, 2, 2), dtype=np.float32), affine)


def strong_survival(src, dst):
    """The phantom with event times that follow its lesion burden and effusion exactly (a
    quarter censored early): a 40-patient test split then measures the probe, not the noise."""
    import shutil

    import pandas as pd

    shutil.copytree(src, dst)
    m = pd.read_csv(dst / "manifest.csv")
    z = m["lesion_burden_ml"] / m["lesion_burden_ml"].std() + m["pleural_effusion"]
    m["time"] = 1000.0 * np.exp(-z)
    m["event"] = 1
    censored = np.arange(len(m)) % 4 == 0
    m.loc[censored, "time"] *= 0.5
    m.loc[censored, "event"] = 0
    m.to_csv(dst / "manifest.csv", index=False)
    return dst
