"""``oracle``: the phantom's ground truth as features, the ceiling of the self-test ladder.

It encodes only scans of a ctbench phantom. The scan's source file (``filename_or_obj`` of the
MetaTensor the readers return) names the case: it must be ``<root>/images/<case>.nii.gz`` with a
``<root>/truth.json`` (:mod:`ctbench.phantom_truth`, validated as untrusted input) that records the
case, and the volume's grid shape and affine must equal the recorded ones, so the oracle never
answers for a volume other than the one it was given. Any other volume is refused with one
message naming its file.

- embedding (18 values): the four findings (+1 present, -1 absent), contrast phase (+1/-1), then
  half-weighted scaled quantities: liver volume, total lesion volume (log and linear), per-kind
  lesion volume and count, pleural fluid depths, the survival risk (the generator's linear
  predictor) and the largest lesion's radius. Findings carry the most weight, so cosine retrieval ranks by them.
- tokens: the scan's ground-truth mask pooled over 4x4x4 voxel blocks: the fraction of each
  label 0-6 per block, plus the largest lesion's occupancy (a Gaussian of the block's distance to
  its centre, sigma = its radius); token_affine maps block index to world mm.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ctbench.card import InputSpec, ModelCard, WeightsSpec
from ctbench.errors import CTBenchError
from ctbench.phantom_truth import CASE_PATTERN, FINDING_KINDS, TRUTH_FILE, CaseTruth, Truth, read_truth
from ctbench.types import Features

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

__all__ = ["CARD", "OracleEncoder", "oracle_embedding", "oracle_tokens"]

POOL = 4  # voxels per token along each axis
N_LABELS = 7  # phantom mask labels 0-6
FINDINGS = ("lung_nodule", "liver_lesion", "kidney_cyst", "pleural_effusion")
CONTINUOUS_WEIGHT = 0.5  # findings dominate cosine similarity

CARD = ModelCard(
    group="baseline", weights_access="none",
    name="oracle",
    title="Phantom ground truth (oracle ceiling, phantom datasets only)",
    citation="ctbench built-in reference (no publication)",
    licence="Apache-2.0",
    architecture=(
        "no network: looks up the scan's ground truth in the phantom's truth.json. Embedding: four "
        "findings (+-1), contrast (+-1), liver volume, total (log and linear) and per-kind lesion volume "
        "and count, pleural fluid depths, survival risk, largest lesion radius (scaled, half weight). Tokens: ground-truth mask "
        "label fractions (labels 0-6) and the largest lesion's occupancy per 4x4x4-voxel block"
    ),
    parameters=0,
    embedding_dim=18,
    token_dim=N_LABELS + 1,
    supervision="none",
    input=InputSpec(
        orientation="native", spacing_mm="native", hu_window=None,
        intensity="not read: features come from the phantom's truth.json and mask",
        spatial_size="native; tokens pool 4x4x4 voxels (edges padded as background)",
        axis_order="(X, Y, Z) as stored",
    ),
    weights=WeightsSpec(format="none"),
)


def oracle_embedding(t: CaseTruth) -> np.ndarray:
    """The 18 ground-truth values of a scan (see the module docstring), float32."""
    sign = [2.0 * t.findings[f] - 1.0 for f in FINDINGS] + [2.0 * t.contrast - 1.0]
    burden = {k: sum(les.radius**3 for les in t.lesions if les.kind == k) * 4e-3 / 3 * math.pi
              for k in FINDING_KINDS}
    count = {k: sum(les.kind == k for les in t.lesions) for k in FINDING_KINDS}
    largest = t.largest
    scaled = [
        (t.liver_volume_ml - 400.0) / 180.0,
        math.log1p(t.lesion_burden_ml) - 1.0,
        t.lesion_burden_ml / 10.0 - 1.0,
        *(math.log1p(burden[k]) - 1.0 for k in FINDING_KINDS),
        *(count[k] - 1.0 for k in FINDING_KINDS),
        *(d / 20.0 - 1.0 for d in t.effusion_mm),
        (t.risk - 2.0) / 2.0,
        (largest.radius if largest else 0.0) / 5.0 - 1.0,
    ]
    return np.array(sign + [CONTINUOUS_WEIGHT * v for v in scaled], dtype=np.float32)


def _pool_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple(-(-int(n) // POOL) for n in shape)  # type: ignore[return-value]


def token_grid_affine(affine: np.ndarray) -> np.ndarray:
    """Token index -> world mm: block ``b`` is centred at voxel ``POOL * b + (POOL - 1) / 2``."""
    scale = np.diag([POOL, POOL, POOL, 1.0])
    scale[:3, 3] = (POOL - 1) / 2.0
    return np.asarray(affine, dtype=np.float64) @ scale


def oracle_tokens(mask: np.ndarray, affine: np.ndarray, t: CaseTruth) -> tuple[np.ndarray, np.ndarray]:
    """Tokens ``(8, *grid)``: label fractions per block and the largest lesion's occupancy, and
    their token affine. ``mask`` is the scan's label map on its own voxel grid."""
    grid = _pool_shape(mask.shape)
    padded = np.zeros([g * POOL for g in grid], dtype=np.int64)  # background beyond the edges
    padded[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    onehot = np.eye(N_LABELS, dtype=np.float32)[np.clip(padded, 0, N_LABELS - 1)]
    blocks = onehot.reshape(grid[0], POOL, grid[1], POOL, grid[2], POOL, N_LABELS).mean(axis=(1, 3, 5))
    tok_affine = token_grid_affine(affine)
    bump = np.zeros(grid, dtype=np.float32)
    largest = t.largest
    if largest is not None:
        idx = np.indices(grid).reshape(3, -1)
        world = tok_affine[:3, :3] @ idx + tok_affine[:3, 3:4]
        d2 = ((world - np.asarray(largest.centre)[:, None]) ** 2).sum(0)
        bump = np.exp(-d2 / (2 * largest.radius**2)).reshape(grid).astype(np.float32)
    return np.concatenate([np.moveaxis(blocks, -1, 0), bump[None]]), tok_affine


class OracleEncoder:
    """Ground-truth features of phantom scans (see the module docstring); no weights."""

    card = CARD

    def __init__(self, weights: str = "auto", device: str = "cpu") -> None:
        from ctbench.weights import resolve_weights

        self.weights_ref = resolve_weights(CARD, weights)  # no weights: "none", a file is refused
        self.device = device  # numpy on the CPU whatever the run's device
        self.preprocessing_id = CARD.preprocessing_hash({"pool": POOL, "truth_format": 1, "embedding": 2})
        self._truths: dict[Path, tuple[int, Truth]] = {}

    def _truth_of(self, root: Path) -> Truth:
        path = root / TRUTH_FILE
        stamp = path.stat().st_mtime_ns
        if root not in self._truths or self._truths[root][0] != stamp:
            self._truths[root] = (stamp, read_truth(path))
        return self._truths[root][1]

    def lookup(self, volume: "MetaTensor") -> tuple[Path, CaseTruth]:
        """The phantom root and ground truth of ``volume``, or a CTBenchError naming its file."""
        import re

        meta = getattr(volume, "meta", None) or {}
        source = meta.get("filename_or_obj")
        if not isinstance(source, str) or not source:
            raise CTBenchError("oracle: the volume has no source file (MetaTensor meta 'filename_or_obj'); the "
                               "oracle encodes only phantom images read from disk (ctbench datasets phantom)")
        image = Path(source)
        case = image.name[: -len(".nii.gz")] if image.name.endswith(".nii.gz") else ""
        root = image.parent.parent
        if not re.match(CASE_PATTERN, case) or image.parent.name != "images" or not (root / TRUTH_FILE).is_file():
            raise CTBenchError(f"oracle: {image} is not an image of a ctbench phantom (expected "
                               f"<phantom>/images/P<number>-s<1|2>.nii.gz beside <phantom>/{TRUTH_FILE}); "
                               f"the oracle works only on phantom datasets: use another model for this dataset")
        truth = self._truth_of(root)
        if case not in truth.cases:
            raise CTBenchError(f"oracle: {root / TRUTH_FILE} has no case {case!r} for {image}; regenerate "
                               f"the phantom (ctbench datasets phantom --out DIR)")
        t = truth.cases[case]
        affine = np.asarray(volume.affine, dtype=np.float64)
        if tuple(volume.shape[1:]) != t.shape or not np.allclose(affine, np.asarray(t.affine), atol=1e-3):
            raise CTBenchError(f"oracle: the volume read from {image} (shape {tuple(volume.shape[1:])}) does not "
                               f"match the grid {root / TRUTH_FILE} records for {case!r} (shape {t.shape}); the "
                               f"image was changed after the phantom was written: regenerate the phantom")
        return root, t

    def encode(self, volume: "MetaTensor") -> Features:
        """Ground-truth embedding and mask tokens of one phantom scan."""
        import nibabel as nib

        from ctbench.readers import require_regular
        from ctbench.safe_paths import inside

        root, t = self.lookup(volume)
        mask_path = inside(root, *t.mask.split("/"))
        require_regular(mask_path)
        img = nib.load(str(mask_path))
        mask = np.asarray(img.dataobj)
        if mask.shape != t.shape:
            raise CTBenchError(f"oracle: mask {mask_path} has shape {mask.shape}, the image {t.shape}; regenerate "
                               f"the phantom")
        tokens, tok_affine = oracle_tokens(mask, np.asarray(volume.affine, dtype=np.float64), t)
        return Features(oracle_embedding(t), tokens, tok_affine)
