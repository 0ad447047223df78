"""``hu-histogram``: a deterministic baseline with no weights. The embedding is a fixed-bin HU
histogram of the body plus four global measurements, so a board shows how far a foundation model
gets beyond what plain densities and volumes already tell.

Definitions (all in physical units, so the voxel size does not change the features):

- *tissue*: the largest 6-connected component of voxels above -500 HU (soft tissue and bone; the
  scanner table, clothing and noise specks fall away);
- *body*: tissue plus what it encloses in each axial slice (lungs, airways), after reorienting to
  RAS so that the third axis runs inferior -> superior;
- embedding (84 values): the body's HU histogram (80 bins of 25 HU over [-1000, 1000]; values
  outside fold into the end bins) as fractions of the body volume; body volume in litres; lung
  fraction (body voxels in [-950, -500) HU); high-density fraction (body voxels above 300 HU);
  mean HU of the tissue.

Cheap to import: numpy and the card only; MONAI and scipy are imported when encoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ctbench.card import InputSpec, ModelCard, WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.types import Features
from ctbench.weights import resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

__all__ = ["CARD", "BIN_EDGES", "MEASUREMENTS", "HUHistogramEncoder", "body_masks", "hu_features"]

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # world axes of the canonical volume
TISSUE_HU = -500.0  # tissue: above this
LUNG_HU = (-950.0, -500.0)  # lung: in [low, high) inside the body
DENSE_HU = 300.0  # high density (bone, calcification, dense contrast): above this
BIN_EDGES = np.arange(-1000.0, 1000.0 + 1e-6, 25.0)  # 80 bins of 25 HU
MEASUREMENTS = ("body_volume_l", "lung_fraction", "dense_fraction", "tissue_mean_hu")
EMBEDDING_DIM = len(BIN_EDGES) - 1 + len(MEASUREMENTS)

CARD = ModelCard(
    group="baseline", weights_access="none",
    name="hu-histogram",
    title="HU histogram of the body and global measurements (baseline, no weights)",
    citation="ctbench baseline (no publication): the body's HU histogram and global measurements",
    licence="Apache-2.0",
    architecture=(
        "no network. Tissue = largest 6-connected component of voxels > -500 HU; body = tissue plus "
        "what it encloses in each axial slice. Embedding (84): body HU histogram, 80 bins of 25 HU over "
        "[-1000, 1000] (outside values fold into the end bins), as fractions of the body volume; body "
        "volume (litres, from the affine); lung fraction (body voxels in [-950, -500) HU); "
        "high-density fraction (body voxels > 300 HU); mean tissue HU. No tokens"
    ),
    parameters=0,
    embedding_dim=EMBEDDING_DIM,
    token_dim=None,
    supervision="none",
    pretraining_datasets=(),
    input=InputSpec(
        orientation="RAS (only to take axial slices)",
        spacing_mm="native (no resampling); volumes from the affine's voxel volume",
        hu_window=(-1000.0, 1000.0),
        intensity="HU as read; histogram range [-1000, 1000] HU, values outside fold into the end bins",
        spatial_size="native, whole volume",
        axis_order="(1, R, A, S)",
    ),
    weights=WeightsSpec(format="none"),
)


def body_masks(hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tissue, body) boolean masks of an HU array whose last axis is inferior -> superior.

    Tissue is the largest 6-connected component above :data:`TISSUE_HU`; body adds the holes
    tissue encloses in each axial slice (lungs, airways). Both are empty when nothing is above
    the threshold."""
    from scipy import ndimage

    above = hu > TISSUE_HU
    labels, n = ndimage.label(above)
    if n == 0:
        return above, above
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    tissue = labels == int(np.argmax(sizes))
    body = np.empty_like(tissue)
    for k in range(tissue.shape[-1]):  # axial: a lung is a hole in its slice, open only at the ends
        body[..., k] = ndimage.binary_fill_holes(tissue[..., k])
    return tissue, body


def hu_features(hu: np.ndarray, voxel_ml: float) -> np.ndarray:
    """The 84-value embedding of an HU array (last axis inferior -> superior) whose voxels hold
    ``voxel_ml`` millilitres each; raises ``CTBenchError`` when there is no body."""
    tissue, body = body_masks(hu)
    if not tissue.any():
        raise CTBenchError(
            f"hu-histogram: no voxel above {TISSUE_HU:g} HU, so there is no body to measure; check that "
            f"the image holds Hounsfield units (rescale slope/intercept applied)"
        )
    inside = hu[body].astype(np.float64)
    counts, _ = np.histogram(np.clip(inside, BIN_EDGES[0], BIN_EDGES[-1]), bins=BIN_EDGES)
    n = float(inside.size)
    lung = np.count_nonzero((inside >= LUNG_HU[0]) & (inside < LUNG_HU[1])) / n
    dense = np.count_nonzero(inside > DENSE_HU) / n
    measures = [n * voxel_ml / 1000.0, lung, dense, float(hu[tissue].astype(np.float64).mean())]
    return np.concatenate([counts / n, measures]).astype(np.float32)


class HUHistogramEncoder:
    """The ``hu-histogram`` baseline: deterministic, no weights, no tokens, milliseconds on CPU."""

    card = CARD

    def __init__(self, weights: str = "auto", device: str = "cpu") -> None:
        self.weights_ref = resolve_weights(CARD, weights)  # no weights: "none", a file is refused
        self.device = device  # numpy on the CPU whatever the run's device
        self.embedding_dim = EMBEDDING_DIM
        self.token_dim = None
        self.preprocessing_id = CARD.preprocessing_hash({
            "tissue_hu": TISSUE_HU, "lung_hu": list(LUNG_HU), "dense_hu": DENSE_HU,
            "bin_edges": [float(BIN_EDGES[0]), float(BIN_EDGES[-1]), len(BIN_EDGES) - 1],
            "measurements": list(MEASUREMENTS),
        })

    def encode(self, volume: "MetaTensor") -> Features:
        from monai.transforms import Orientation

        from ._common import affine_of, preprocess

        x = preprocess(volume, [Orientation(axcodes="RAS", labels=RAS_LABELS)], "hu-histogram")
        voxel_ml = abs(float(np.linalg.det(affine_of(x)[:3, :3]))) / 1000.0
        return Features(hu_features(x.detach().cpu().numpy()[0], voxel_ml))
