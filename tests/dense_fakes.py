"""Synthetic dense encoders for the localisation and segmentation tests.

``DenseOracleEncoder`` makes tokens that encode organ identity and position exactly, on a grid of
its own: isotropic cells, axes (S, L, A) rotated about S, offset from the voxel centres, whatever
the scan's spacing and orientation. Its sampling is written independently of
``ctbench.tasks.dense`` (nearest-voxel lookups through the affines), so a geometry error in the
task code cannot be cancelled by the same error here. ``DenseNoiseEncoder`` gives seeded random
tokens on the same grid: the chance-level control.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ctbench.types import Features
from ctbench.weights import WeightsRef
from tests.fakes import CARD as BASE_CARD

N_LABELS = 7  # phantom labels 0..6
LESION = 6
ROTATION_DEG = 15.0
BODY_HU = -500.0
SUBSAMPLES = (-0.25, 0.25)  # per axis: 8 nearest-voxel samples per cell


def oracle_grid(hu: np.ndarray, affine: np.ndarray, cell_mm: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """Token index -> world affine and grid shape covering the body (HU > -500), like a model
    that crops the foreground.

    Token axes: +S, then L and A rotated by ``ROTATION_DEG`` about S; cell centres start a
    fraction of a cell off the box, so they never line up with voxel centres.
    """
    c, s = np.cos(np.radians(ROTATION_DEG)), np.sin(np.radians(ROTATION_DEG))
    axes = np.array([[0.0, 0.0, 1.0], [-c, -s, 0.0], [-s, c, 0.0]]).T * cell_mm  # columns
    body = np.argwhere(hu > BODY_HU)
    if not len(body):
        body = np.argwhere(np.ones_like(hu, dtype=bool))
    box = np.stack([body.min(0), body.max(0)])
    corners = np.array([[box[a, 0], box[b, 1], box[c_, 2]] for a in (0, 1) for b in (0, 1) for c_ in (0, 1)])
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    local = world @ np.linalg.inv(axes).T  # corners in token index units (no origin yet)
    lo, hi = local.min(0) - 0.63, local.max(0) + 1
    grid_shape = tuple(int(n) for n in np.floor(hi - lo) + 1)
    out = np.eye(4)
    out[:3, :3] = axes
    out[:3, 3] = axes @ lo
    return out, grid_shape


def _token_world(token_affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World mm of the token centres, ``(*shape, 3)``, straight from the affine."""
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    return idx @ token_affine[:3, :3].T + token_affine[:3, 3]


def _sample_nearest(labels: np.ndarray, vox: np.ndarray) -> np.ndarray:
    """Label of the voxel nearest to each continuous voxel position ``(..., 3)``; -1 outside."""
    v = np.rint(vox).astype(np.int64)
    inside = np.all((v >= 0) & (v < np.array(labels.shape)), axis=-1)
    out = np.full(vox.shape[:-1], -1, dtype=np.int64)
    out[inside] = labels[tuple(v[inside].T)]
    return out


def mask_of(volume) -> Path:
    """The phantom's mask file of the image a volume was read from."""
    image = Path(volume.meta["filename_or_obj"])
    return image.parent.parent / "masks" / image.name


def oracle_tokens(hu: np.ndarray, hu_affine: np.ndarray, labels: np.ndarray, affine: np.ndarray,
                  cell_mm: float) -> Features:
    """Channels: fractions of the cell's voxels (8 nearest-voxel samples) in each of labels
    0..5, in the other lesions (6) and in the largest lesion (7); then the cell centre's world
    x, y, z (mm / 100). The largest lesion has an identity of its own, so a probe can find it."""
    token_affine, shape = oracle_grid(hu, hu_affine, cell_mm)
    comps, n = ndimage.label(labels == LESION)
    marked = labels.astype(np.int64)
    if n:
        largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(comps), comps, range(1, n + 1))))
        marked[comps == largest] = N_LABELS  # the largest lesion: its own identity
    n_cells, n_ch = int(np.prod(shape)), N_LABELS + 2  # channel 0 counts samples outside the scan
    counts = np.zeros(n_cells * n_ch)
    cell = np.arange(n_cells) * n_ch + 1
    world = _token_world(token_affine, shape).reshape(-1, 3)
    to_voxel = np.linalg.inv(affine)
    base = world @ to_voxel[:3, :3].T + to_voxel[:3, 3]  # token centres in voxel index units
    for offset in np.array(np.meshgrid(SUBSAMPLES, SUBSAMPLES, SUBSAMPLES)).reshape(3, -1).T:
        step = to_voxel[:3, :3] @ token_affine[:3, :3] @ offset  # a sub-cell offset, in voxels
        counts += np.bincount(cell + _sample_nearest(marked, base + step), minlength=n_cells * n_ch)
    counts = (counts.reshape(n_cells, n_ch)[:, 1:].T / len(SUBSAMPLES) ** 3).astype(np.float32)
    counts = counts.reshape(N_LABELS + 1, *shape)
    centres = world.T.reshape(3, *shape) / 100.0
    return Features(counts.mean(axis=(1, 2, 3)), np.concatenate([counts, centres]), token_affine)


class DenseOracleEncoder:
    """Tokens = organ-label fractions (+ largest-lesion marker) and world position, on its own
    rotated isotropic grid of ``cell_mm`` cells."""

    cell_mm = 6.0
    card = BASE_CARD.model_copy(update={"name": "test-dense-oracle", "embedding_dim": N_LABELS + 1,
                                        "token_dim": N_LABELS + 4})

    def __init__(self, weights: str = "random", device: str = "cpu") -> None:
        self.weights_ref = WeightsRef(None, "random")
        self.preprocessing_id = self.card.preprocessing_hash({"cell_mm": self.cell_mm, "kind": type(self).__name__})

    def encode(self, volume) -> Features:
        img = nib.load(str(mask_of(volume)))
        labels = np.asarray(img.dataobj, dtype=np.int64)
        hu = np.asarray(volume)[0]
        return oracle_tokens(hu, np.asarray(volume.affine, dtype=np.float64), labels,
                             np.asarray(img.affine, dtype=np.float64), self.cell_mm)


class DenseNoiseEncoder(DenseOracleEncoder):
    """Seeded Gaussian tokens on the oracle's grid: nothing to learn (chance control)."""

    card = DenseOracleEncoder.card.model_copy(update={"name": "test-dense-noise"})

    def encode(self, volume) -> Features:
        affine = np.asarray(volume.affine, dtype=np.float64)
        token_affine, shape = oracle_grid(np.asarray(volume)[0], affine, self.cell_mm)
        rng = np.random.default_rng(zlib.crc32(Path(volume.meta["filename_or_obj"]).name.encode()))
        tokens = rng.standard_normal((N_LABELS + 4, *shape), dtype=np.float32)
        return Features(tokens.mean(axis=(1, 2, 3)), tokens, token_affine)


def register(name: str, cls: type, cell_mm: float) -> str:
    """Register a subclass of ``cls`` with ``cell_mm`` cells under ``name`` (once per session)."""
    from ctbench.registry import MODELS

    if name not in MODELS:
        sub = type(f"{cls.__name__}_{name.replace('-', '_')}", (cls,),
                   {"cell_mm": cell_mm, "card": cls.card.model_copy(update={"name": name})})
        MODELS.register(name)(sub)
    return name


def record_head_devices(monkeypatch, module) -> list:
    """Wrap ``module.train_head`` so that each call records the device of the head's weights;
    returns the (growing) list of devices."""
    seen: list = []
    train_head = module.train_head

    def recording(model, *args, **kwargs):
        seen.append(next(model.parameters()).device)
        return train_head(model, *args, **kwargs)

    monkeypatch.setattr(module, "train_head", recording)
    return seen
