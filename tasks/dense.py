"""Shared helpers of the dense (token-grid) tasks, localisation and segmentation.

Everything goes through world space: a token grid's ``token_affine`` (token index -> world RAS
mm) and a label map's own affine are composed, so labels land on any model's grid whatever it
resampled, reoriented, cropped or padded, and predictions go back to each case's original voxels.

- geometry: :func:`grid_world`, :func:`normalised_positions`, :func:`refine_affine`
- labels onto a grid: :func:`read_labels`, :func:`label_geometry`, :func:`labels_to_grid`
- predictions back to voxels: :func:`voxel_slabs`, :func:`confusion_counts`, :func:`predict_labels`
- training: :class:`TokenScaler` (per-channel standardisation from training tokens); the batched
  loop, shape groups and the per-task cache of training sets are in
  :mod:`ctbench.tasks.dense_train`
- the tasks' shared base: :class:`DenseTask` (token-grid inputs, the run's ``--device`` on which
  both heads train and predict, multi-seed refits, :meth:`DenseTask.fit_cache`)

Memory stays bounded per case: original volumes are processed in slabs of at most
``CHUNK_VALUES`` values; stacked training tensors are kept only within a budget
(:data:`ctbench.tasks.dense_train.STACK_BUDGET_BYTES`), otherwise stacked per batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ctbench.datasets import Dataset, TaskSpec
from ctbench.devices import check_device_name, resolve_device
from ctbench.errors import CTBenchError
from ctbench.readers import require_regular
from ctbench.task import ProbeTask
from ctbench.tasks.dense_train import FitCache
from ctbench.types import Features

CHUNK_VALUES = 1 << 23  # floats per slab when walking an original voxel grid (~32 MB)
DENSE_COUNTS = 1 << 22  # (cell, label) pairs counted in a dense array up to this many (32 MB)


# --- geometry -----------------------------------------------------------------------------


def _homogeneous(affine: np.ndarray) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)) or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise CTBenchError(f"a grid affine must be a finite, invertible 4x4 matrix, got {a.tolist()}")
    return a


def grid_world(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World RAS mm of every cell centre of a grid, ``(N, 3)`` in C order of ``shape``."""
    a = _homogeneous(affine)
    axes = [np.arange(n, dtype=np.float64)[:, None] * a[:3, d] for d, n in enumerate(shape)]
    out = (axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]) + a[:3, 3]
    return out.reshape(-1, 3)


def normalised_positions(world: np.ndarray) -> np.ndarray:
    """Cell centres ``(N, 3)`` in world RAS mm scaled to [-1, 1] over their bounding box.

    World axes (not index axes) so that "right/anterior/superior" mean the same for every case
    whatever the stored orientation; per-case scaling so scanner table offsets do not matter.
    """
    lo, hi = world.min(0), world.max(0)
    return (2 * (world - lo) / np.maximum(hi - lo, 1e-6) - 1).astype(np.float32)


def spacing(affine: np.ndarray) -> np.ndarray:
    """Cell size in mm along each index axis."""
    return np.linalg.norm(_homogeneous(affine)[:3, :3], axis=0)


def refine_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """Affine of the grid ``factor`` times finer over the same cells: fine cell ``f`` is centred
    at coarse index ``(f + 0.5) / factor - 0.5`` (the geometry of a stride-``factor`` transposed
    convolution, or of ``align_corners=False`` upsampling)."""
    m = np.eye(4)
    m[:3, :3] /= factor
    m[:3, 3] = 0.5 / factor - 0.5
    return _homogeneous(affine) @ m


def _index_map(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4x4 mapping ``src`` grid indices to continuous ``dst`` grid indices (via world mm)."""
    return np.linalg.inv(_homogeneous(dst)) @ _homogeneous(src)


def _slab_indices(m: np.ndarray, i0: int, i1: int, shape: Sequence[int]) -> np.ndarray:
    """Continuous target indices ``(3, i1 - i0, Y, Z)`` of the voxels of slab ``i0:i1``."""
    i = np.arange(i0, i1, dtype=np.float64)[:, None, None]
    j = np.arange(shape[1], dtype=np.float64)[None, :, None]
    k = np.arange(shape[2], dtype=np.float64)[None, None, :]
    return np.stack([m[r, 0] * i + m[r, 1] * j + m[r, 2] * k + m[r, 3] for r in range(3)])


def _slabs(shape: Sequence[int], values_per_voxel: int = 1) -> Iterator[tuple[int, int]]:
    step = max(1, CHUNK_VALUES // max(1, int(shape[1]) * int(shape[2]) * values_per_voxel))
    for i0 in range(0, int(shape[0]), step):
        yield i0, min(int(shape[0]), i0 + step)


# --- labels onto a grid ---------------------------------------------------------------------


def read_labels(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Integer label map ``(X, Y, Z)`` and its voxel -> world RAS affine.

    NIfTI is read with nibabel in its stored integer type (no float copy of a large mask);
    other formats go through :func:`ctbench.readers.read_volume`.
    """
    p = Path(path)
    if not p.exists():
        raise CTBenchError(f"mask not found: {p}; fix the manifest's mask column")
    require_regular(p)  # a FIFO or device would never finish reading
    if p.name.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            img = nib.load(str(p))
            data = np.asanyarray(img.dataobj)
        except Exception as e:  # noqa: BLE001 - nibabel raises many types for bad files
            raise CTBenchError(f"{p}: the mask could not be read ({e}); re-export it") from None
        affine = np.asarray(img.affine, dtype=np.float64)
        data = data.reshape(data.shape[:3]) if data.ndim == 4 and data.shape[3] == 1 else data
    else:
        from ctbench.readers import read_volume

        vol = read_volume(p)
        data, affine = vol.as_tensor()[0].numpy(), np.asarray(vol.affine, dtype=np.float64)
    if data.ndim != 3:
        raise CTBenchError(f"{p}: a mask must be a 3-D label map, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise CTBenchError(f"{p}: mask values must be integer labels; re-export it as labels")
        data = data.astype(np.int64)
    if data.size and data.min() < 0:
        raise CTBenchError(f"{p}: mask has negative labels; labels must be 0 (background), 1, 2, ...")
    return data, affine


def label_geometry(path: str | Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of a label map, from the header alone where the format allows."""
    p = Path(path)
    if p.name.lower().endswith((".nii", ".nii.gz")) and p.exists():
        import nibabel as nib

        try:
            img = nib.load(str(p))
            return tuple(int(n) for n in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)
        except Exception:  # noqa: BLE001 - fall through to read_labels' clear message
            pass
    labels, affine = read_labels(p)
    return labels.shape, affine


def _cell_label_counts(
    labels: np.ndarray, affine: np.ndarray, grid_affine: np.ndarray, grid_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse ``(cell, label, count)`` of the voxel centres falling in each grid cell (a cell
    spans +-0.5 around its index), accumulated slab by slab: a dense count per (cell, label)
    while cells x labels stays under ``DENSE_COUNTS``, else sorted codes, so memory follows the
    number of (cell, label) pairs present."""
    L = int(labels.max(initial=0)) + 1
    m = _index_map(affine, grid_affine)
    bound = np.array(grid_shape)[:, None, None, None]
    n_codes = int(np.prod(grid_shape)) * L
    dense = np.zeros(n_codes, dtype=np.int64) if n_codes <= DENSE_COUNTS else None
    codes, counts = [], []
    for i0, i1 in _slabs(labels.shape, 4):
        cell = np.floor(_slab_indices(m, i0, i1, labels.shape) + 0.5).astype(np.int64)
        inside = np.all((cell >= 0) & (cell < bound), 0)
        flat = np.ravel_multi_index(tuple(c[inside] for c in cell), grid_shape)
        code = flat * L + labels[i0:i1][inside].astype(np.int64)
        if dense is not None:
            dense += np.bincount(code, minlength=n_codes)
            continue
        code, count = np.unique(code, return_counts=True)
        codes.append(code)
        counts.append(count)
    if dense is not None:
        code = np.flatnonzero(dense)
        return code // L, code % L, dense[code].astype(np.float64)
    code, inverse = np.unique(np.concatenate(codes), return_inverse=True)
    total = np.bincount(inverse, weights=np.concatenate(counts))
    return code // L, code % L, total


def labels_to_grid(
    labels: np.ndarray, affine: np.ndarray, grid_affine: np.ndarray, grid_shape: Sequence[int],
    soft: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of every grid cell and a validity mask ``grid_shape``.

    Rule: a cell's target is the label distribution of the original voxels whose centre falls
    inside it: ``soft`` gives the fractions ``(L, *grid_shape)`` float32 (L = max label + 1),
    otherwise the majority label ``grid_shape`` int64 (for label sets too large to keep dense).
    Cells finer than the voxels may hold no voxel centre: they take the label of the voxel
    nearest to their centre. Cells outside the scan get no target (``valid`` False) and are
    left out of training.
    """
    grid_shape = tuple(int(n) for n in grid_shape)
    n_cells, L = int(np.prod(grid_shape)), int(labels.max(initial=0)) + 1
    cell, lab, count = _cell_label_counts(labels, affine, grid_affine, grid_shape)
    valid = np.zeros(n_cells, dtype=bool)
    valid[cell] = True
    if soft:
        out = np.zeros((L, n_cells), dtype=np.float32)
        out[lab, cell] = count / np.bincount(cell, weights=count, minlength=n_cells)[cell]
    else:
        out = np.zeros(n_cells, dtype=np.int64)
        first = np.lexsort((-count, cell))  # per cell, its most frequent label first
        starts = first[np.r_[True, cell[first][1:] != cell[first][:-1]]]
        out[cell[starts]] = lab[starts]
    empty = np.flatnonzero(~valid)
    if len(empty):  # nearest voxel to the centre of each empty cell
        t = np.stack(np.unravel_index(empty, grid_shape), -1).astype(np.float64)
        back = _index_map(grid_affine, affine)
        v = np.rint(t @ back[:3, :3].T + back[:3, 3]).astype(np.int64)
        ok = np.all((v >= 0) & (v < np.array(labels.shape)), 1)
        near, rows = labels[tuple(v[ok].T)].astype(np.int64), empty[ok]
        if soft:
            out[near, rows] = 1.0
        else:
            out[rows] = near
        valid[rows] = True
    return out.reshape(*out.shape[:-1], *grid_shape), valid.reshape(grid_shape)


# --- predictions back to the original voxels --------------------------------------------------


def first_argmax(values: torch.Tensor) -> torch.Tensor:
    """Index of the largest value along the first axis, the first one among ties (as
    ``torch.argmax``), by a running comparison: several times faster on the CPU than
    ``argmax(0)``, which walks a strided axis."""
    best = values[0].clone()
    out = torch.zeros(values.shape[1:], dtype=torch.int64)
    for k in range(1, values.shape[0]):
        better = values[k] > best
        out.masked_fill_(better, k)
        best = torch.maximum(best, values[k])
    return out


def _uniform_cubes(probs: torch.Tensor) -> torch.Tensor:
    """For every cube of 2 x 2 x 2 neighbouring cells (flattened over ``grid - 1`` per axis),
    the label all eight cells' argmax share, else -1."""
    lab = first_argmax(probs)
    if min(lab.shape) < 2:
        return torch.full((0,), -1, dtype=torch.int64)
    corner = lab[:-1, :-1, :-1]
    same = torch.ones(corner.shape, dtype=torch.bool)
    for di in (0, 1):
        for dj in (0, 1):
            for dk in (0, 1):
                shifted = lab[di : lab.shape[0] - 1 + di, dj : lab.shape[1] - 1 + dj, dk : lab.shape[2] - 1 + dk]
                same &= shifted == corner
    return torch.where(same, corner, -1).reshape(-1)


def _sampled_labels(inp: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """Argmax of the class probabilities ``inp`` ``(1, K, *grid)`` interpolated trilinearly at
    continuous grid indices ``idx`` ``(3, M)`` (zero outside the grid)."""
    g = np.array(inp.shape[2:], dtype=np.float64)[:, None]
    norm = (2 * idx + 1) / g - 1  # align_corners=False convention
    grid = torch.from_numpy(np.ascontiguousarray(norm[::-1].T, dtype=np.float32)).reshape(1, 1, 1, -1, 3)
    out = torch.nn.functional.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return first_argmax(out[0, :, 0, 0])


def voxel_slabs(
    probs: torch.Tensor, grid_affine: np.ndarray, voxel_affine: np.ndarray, voxel_shape: Sequence[int]
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Predicted labels of the original voxels, slab by slab: ``(i0, i1, labels[i0:i1])``.

    Class probabilities ``(K, *grid)`` are interpolated trilinearly at every voxel centre (its
    grid position via ``inv(grid_affine) @ voxel_affine``, as ``grid_sample`` does); the label is
    the argmax (the first among ties). Voxels more than one cell outside the grid (e.g.
    background a model cropped away) read zero probabilities and fall to label 0, background.

    Shortcut, exact: a convex combination of cells whose argmax is the same class keeps that
    argmax, so a voxel inside a cube of eight cells that agree takes their label without
    interpolation; only voxels near a label boundary or the grid's edge are interpolated.
    """
    K = probs.shape[0]
    g = np.array(probs.shape[1:], dtype=np.int64)
    m = _index_map(voxel_affine, grid_affine)
    inp = probs[None].float()
    cubes = _uniform_cubes(inp[0])
    dtype = np.uint8 if K <= 256 else np.int32
    for i0, i1 in _slabs(voxel_shape, K + 16):  # ~20 values per voxel of index arrays, K of probabilities
        idx = _slab_indices(m, i0, i1, voxel_shape).reshape(3, -1)
        out = np.zeros(idx.shape[1], dtype=np.int64)
        base = np.floor(idx).astype(np.int64)
        near = np.all((idx > -1) & (idx < g[:, None]), 0)  # else every corner is outside: label 0
        inner = near & np.all((base >= 0) & (base <= g[:, None] - 2), 0)
        agreed = np.full(idx.shape[1], -1, dtype=np.int64)
        if inner.any():
            agreed[inner] = cubes[torch.from_numpy(np.ravel_multi_index(tuple(base[:, inner]), g - 1))].numpy()
        out[agreed >= 0] = agreed[agreed >= 0]
        rest = near & (agreed < 0)
        if rest.any():
            out[rest] = _sampled_labels(inp, idx[:, rest]).numpy()
        yield i0, i1, out.astype(dtype).reshape(i1 - i0, *voxel_shape[1:])


def confusion_counts(
    probs: torch.Tensor, grid_affine: np.ndarray, labels: np.ndarray, voxel_affine: np.ndarray
) -> np.ndarray:
    """Per-class voxel counts on the original grid, ``(3, n)``: intersection, predicted, true.

    ``n`` covers every label of the prediction and of the truth; Dice of class c is
    ``2 * inter[c] / (pred[c] + true[c])``.
    """
    n = max(probs.shape[0], int(labels.max(initial=0)) + 1)
    out = np.zeros((3, n), dtype=np.int64)
    for i0, i1, pred in voxel_slabs(probs, grid_affine, voxel_affine, labels.shape):
        truth = labels[i0:i1].astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        if n <= 256:  # one pass: the confusion matrix
            table = np.bincount(truth * n + pred, minlength=n * n).reshape(n, n)
            out += np.stack([np.diagonal(table), table.sum(0), table.sum(1)])
            continue
        out[0] += np.bincount(truth[pred == truth], minlength=n)
        out[1] += np.bincount(pred, minlength=n)
        out[2] += np.bincount(truth, minlength=n)
    return out


def predict_labels(
    probs: torch.Tensor, grid_affine: np.ndarray, voxel_affine: np.ndarray, voxel_shape: Sequence[int]
) -> np.ndarray:
    """The whole predicted label map on the original voxel grid (for writing masks)."""
    out = np.zeros(tuple(voxel_shape), dtype=np.uint8 if probs.shape[0] <= 256 else np.int32)
    for i0, i1, pred in voxel_slabs(probs, grid_affine, voxel_affine, voxel_shape):
        out[i0:i1] = pred
    return out


# --- tokens and training ----------------------------------------------------------------------


def dense_features(feats: list[Features], task: str) -> np.ndarray:
    """1-D object array of ``Features`` (so the engine can index and concatenate it), checking
    that every case has a token grid."""
    out = np.empty(len(feats), dtype=object)
    for i, f in enumerate(feats):
        if f.tokens is None or f.token_affine is None:
            raise CTBenchError(
                f"task {task!r} needs token grids, but a cached case has none; use a model whose "
                f"encode() returns tokens and token_affine"
            )
        out[i] = f
    return out


class TokenScaler:
    """Per-channel mean and standard deviation of the training tokens (float64 running sums,
    one case at a time), applied to every case so heads see unit-scale inputs whatever the
    model's feature magnitudes."""

    def __init__(self, feats: Sequence[Features]) -> None:
        total = sq = None
        n = 0
        for f in feats:
            t = np.asarray(f.tokens, dtype=np.float64).reshape(f.tokens.shape[0], -1)
            s, q = t.sum(1), (t * t).sum(1)
            total, sq = (s, q) if total is None else (total + s, sq + q)
            n += t.shape[1]
        if total is None:
            raise CTBenchError("no training case has a token grid; check the training split")
        self.mean = total / n
        self.std = np.sqrt(np.maximum(sq / n - self.mean**2, 0)) + 1e-6

    def __call__(self, f: Features) -> torch.Tensor:
        """Standardised tokens of one case as float32 ``(C, d1, d2, d3)``."""
        t = np.asarray(f.tokens, dtype=np.float32)
        mean = self.mean.astype(np.float32)[:, None, None, None]
        std = self.std.astype(np.float32)[:, None, None, None]
        return torch.from_numpy((t - mean) / std)


class DenseTask(ProbeTask):
    """What the dense tasks (localisation, segmentation) share: token-grid inputs, the run's
    ``--device`` as a constructor keyword (validated at once, resolved by :meth:`head_device`
    when a head trains) and stochastic heads, which the engine refits with several seeds."""

    uses_tokens = True
    takes_device = True  # the runner passes its --device as the keyword ``device``
    probe_modules = ("ctbench.tasks.dense_train",)  # the training loop, in the probe-code fingerprint
    device: str = "auto"  # where the head trains and predicts (see :meth:`head_device`)

    def __init__(self, spec: TaskSpec, dataset: Dataset, device: str | None = None) -> None:
        super().__init__(spec, dataset)
        self.device = check_device_name(device)

    def is_stochastic(self, params: dict) -> bool:
        """Always: a refit with another seed changes the head's initial weights and case order;
        ``fit_predict`` averages the seeds' predictions (the engine's multi-seed refit)."""
        return True

    def inputs(self, feats: list[Features]) -> np.ndarray:
        return dense_features(feats, self.spec.name)

    def fit_cache(self) -> FitCache:
        """The task's prepared training sets (label grids, standardised tokens), kept across
        trials and refit seeds on the same cases (:class:`ctbench.tasks.dense_train.FitCache`)."""
        cache = self.__dict__.get("_fit_cache")
        if cache is None:
            cache = self.__dict__["_fit_cache"] = FitCache()
        return cache

    def head_device(self) -> torch.device:
        """The device the head trains and predicts on: :attr:`device` through
        :func:`ctbench.devices.resolve_device` (``auto``: CUDA when visible, else CPU). Heads are
        built on the CPU under their seed and then moved, so their initial weights do not depend on it."""
        return torch.device(resolve_device(self.device))
