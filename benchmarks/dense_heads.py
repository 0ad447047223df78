"""Dense heads, the earlier path against the current one on the same data, in one run.

    python benchmarks/dense_heads.py                    # the table
    python benchmarks/dense_heads.py --epochs 10 --json

Data (fixed, seeded): ``--cases`` phantom patients (:mod:`ctbench.phantom_anatomy`, labels 0..6:
background, lungs, heart, liver, kidneys, bone, lesion) painted on 64^3 voxels of 4 mm, and 8^3
tokens of 32 mm x 64 channels: a fixed random projection of each token's label fractions in its
2x2x2 sub-blocks plus Gaussian noise (sd ``--noise``). Splits as in a run: 14 train, 6
validation, the rest test. Localisation target: the heart's centroid (world mm).

Per head, with fixed parameters: a tuning trial (fit on train, one seed, predict validation),
run twice (``cold``: label grids made on the first; ``warm``: the second, as later trials),
then the refit (train + validation, seeds 0-2, predict test), and the run a 3-trial study costs
(cold + 2 warm trials + refit). Scoring (predictions back to the original voxels, Dice) is timed
apart, old and new mapping on the same predictions, and once on a CT-sized 512x512x300 mask.
Metrics: validation Dice (trials), test Dice (refit), both on the original voxels; centre error
in mm for localisation. Both paths run single-threaded, as the engine runs every probe.

The earlier path is kept below as a faithful copy (commit 1a9a393 of ``tasks/dense.py``,
``tasks/segmentation.py``, ``tasks/localisation.py``; the helpers and constants that did not
change since are imported from the current modules): one case per optimiser step for
segmentation, four cases' graphs one after the other for localisation, MONAI ``DiceCELoss``
per case, the conv decoder with blocks at every doubling of the grid, no early stopping, and
``argmax`` over the class axis when mapping back to voxels.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import nibabel as nib
import numpy as np
import torch
from torch import nn

from ctbench.phantom_anatomy import FOV_CENTRE, HEART, paint, sample_patient
from ctbench.tasks.dense import _slab_indices, label_geometry, read_labels, spacing
from ctbench.tasks.localisation import SMOOTH_L1_BETA_MM, _case
from ctbench.tasks.segmentation import MAX_FACTOR, MAX_FINE_CELLS, SOFT_TARGET_LABELS
from ctbench.tasks.segmentation_fit import frequency, n_labels, output_grid
from ctbench.tasks.segmentation_heads import MAX_WEIGHT_RATIO, _Block
from ctbench.threads import single_threaded
from ctbench.types import Features

VOXELS, TOKENS, CHANNELS, VOXEL_MM, SUB = 64, 8, 64, 4.0, 2
N_TRAIN, N_VAL = 14, 6
REFIT_SEEDS = [0, 1, 2]


# --- data ------------------------------------------------------------------------------------


def make_cases(folder: Path, n: int, seed: int, noise: float) -> tuple[np.ndarray, list[Path], np.ndarray]:
    """Token grids (object array of Features), mask files and heart centres (n, 3) world mm."""
    rng = np.random.default_rng(seed)
    proj = np.random.default_rng(1234).standard_normal((CHANNELS, 7 * SUB**3)) * 3 / np.sqrt(7 * SUB**3)
    step = VOXELS // TOKENS
    affine = np.diag([VOXEL_MM] * 3 + [1.0])
    affine[:3, 3] = np.asarray(FOV_CENTRE) - VOXEL_MM * (VOXELS - 1) / 2
    token_affine = np.diag([VOXEL_MM * step] * 3 + [1.0])
    token_affine[:3, 3] = affine[:3, 3] + VOXEL_MM * (step - 1) / 2  # token t covers voxels 8t..8t+7
    axes = [affine[d, d] * np.arange(VOXELS) + affine[d, 3] for d in range(3)]
    X, paths, centres = np.empty(n, dtype=object), [], np.zeros((n, 3))
    for i in range(n):
        p = sample_patient(rng)
        shift = rng.uniform(-12, 12, 3)
        _, lab = paint(p, (axes[0] - shift[0])[:, None, None], (axes[1] - shift[1])[None, :, None],
                       (axes[2] - shift[2])[None, None, :])
        path = folder / f"case{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(lab, affine), str(path))
        sub = step // SUB
        frac = np.eye(7, dtype=np.float32)[lab].reshape(TOKENS, SUB, sub, TOKENS, SUB, sub, TOKENS, SUB, sub, 7)
        feats = frac.mean((2, 5, 8)).transpose(0, 2, 4, 1, 3, 5, 6).reshape(TOKENS, TOKENS, TOKENS, -1)
        tokens = feats @ proj.T + noise * rng.standard_normal((TOKENS, TOKENS, TOKENS, CHANNELS))
        X[i] = Features(np.zeros(1), tokens.transpose(3, 0, 1, 2).astype(np.float32), token_affine)
        paths.append(path)
        centres[i] = np.argwhere(lab == HEART).mean(0) @ affine[:3, :3].T + affine[:3, 3]
    return X, paths, centres


def dice_macro_of(counts: Sequence[np.ndarray]) -> float:
    """The task's ``dice_macro`` from per-case ``(3, n)`` voxel counts (inter, pred, true)."""
    n = max(c.shape[1] for c in counts)
    table = np.full((len(counts), n), np.nan)
    for i, (inter, p, t) in enumerate(counts):
        present = t > 0
        table[i, : len(t)][present] = 2 * inter[present] / (p[present] + t[present])
    table = table[:, 1:]
    seen = ~np.all(np.isnan(table), 0)
    return float(np.mean(np.nanmean(table[:, seen], 0)))


# --- the earlier path, kept verbatim (names prefixed) ------------------------------------------


def _index_map(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    return np.linalg.inv(dst) @ src


def _slabs(shape: Sequence[int], values_per_voxel: int = 1) -> Iterator[tuple[int, int]]:
    step = max(1, (1 << 23) // max(1, int(shape[1]) * int(shape[2]) * values_per_voxel))
    for i0 in range(0, int(shape[0]), step):
        yield i0, min(int(shape[0]), i0 + step)


def _cell_label_counts(
    labels: np.ndarray, affine: np.ndarray, grid_affine: np.ndarray, grid_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse ``(cell, label, count)`` of the voxel centres falling in each grid cell (a cell
    spans +-0.5 around its index), accumulated slab by slab: memory follows the number of
    (cell, label) pairs present, not cells x labels."""
    L = int(labels.max(initial=0)) + 1
    m = _index_map(affine, grid_affine)
    bound = np.array(grid_shape)[:, None, None, None]
    codes, counts = [], []
    for i0, i1 in _slabs(labels.shape, 4):
        cell = np.floor(_slab_indices(m, i0, i1, labels.shape) + 0.5).astype(np.int64)
        inside = np.all((cell >= 0) & (cell < bound), 0)
        flat = np.ravel_multi_index(tuple(c[inside] for c in cell), grid_shape)
        code, count = np.unique(flat * L + labels[i0:i1][inside].astype(np.int64), return_counts=True)
        codes.append(code)
        counts.append(count)
    code, inverse = np.unique(np.concatenate(codes), return_inverse=True)
    total = np.bincount(inverse, weights=np.concatenate(counts))
    return code // L, code % L, total


def old_labels_to_grid(
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


class TokenScaler:
    def __init__(self, feats: Sequence[Features]) -> None:
        total = sq = None
        n = 0
        for f in feats:
            t = np.asarray(f.tokens, dtype=np.float64).reshape(f.tokens.shape[0], -1)
            s, q = t.sum(1), (t * t).sum(1)
            total, sq = (s, q) if total is None else (total + s, sq + q)
            n += t.shape[1]
        self.mean = total / n
        self.std = np.sqrt(np.maximum(sq / n - self.mean**2, 0)) + 1e-6

    def __call__(self, f: Features) -> torch.Tensor:
        t = np.asarray(f.tokens, dtype=np.float32)
        mean = self.mean.astype(np.float32)[:, None, None, None]
        std = self.std.astype(np.float32)[:, None, None, None]
        return torch.from_numpy((t - mean) / std)


def old_train_head(
    model: nn.Module, n_cases: int, case_loss: Callable[[int], torch.Tensor], *,
    lr: float, weight_decay: float, epochs: int, seed: int, batch_cases: int = 4,
) -> nn.Module:
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, epochs * -(-n_cases // batch_cases))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(n_cases)
        for s in range(0, n_cases, batch_cases):
            chunk = order[s : s + batch_cases]
            opt.zero_grad(set_to_none=True)
            for i in chunk:
                (case_loss(int(i)) / len(chunk)).backward()
            opt.step()
            sched.step()
    return model.eval()


# --- segmentation -------------------------------------------------------------------------


def old_on_grid(path: Path, affine: np.ndarray, shape: tuple[int, ...],
                store: dict) -> tuple[torch.Tensor | None, np.ndarray]:
    """``MaskTarget.on_grid``: valid-cell mask and float16 distributions over the valid cells."""
    key = (str(path), tuple(shape), np.asarray(affine, np.float64).tobytes())
    if key not in store:
        labels, lab_affine = read_labels(path)
        soft = int(labels.max(initial=0)) < SOFT_TARGET_LABELS
        dist, valid = old_labels_to_grid(labels, lab_affine, affine, shape, soft=soft)
        flat = valid.ravel()
        keep = None if flat.all() else torch.from_numpy(flat)
        if soft:
            store[key] = (keep, dist.reshape(dist.shape[0], -1)[:, flat].astype(np.float16))
        else:
            store[key] = (keep, dist.ravel()[flat].astype(np.int16))
    return store[key]


class OldConvDecoder(nn.Module):
    def __init__(self, channels: int, classes: int, width: int, factor: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv3d(channels, width, 1), _Block(width)]
        for _ in range(int(np.log2(factor))):
            layers += [nn.ConvTranspose3d(width, width, 2, stride=2), nn.GELU(), _Block(width)]
        self.net = nn.Sequential(*layers, nn.Conv3d(width, classes, 1))
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _build_head(params: dict, channels: int, classes: int, factor: int) -> nn.Module:
    if params["probe"] == "linear":
        head = nn.Conv3d(channels, classes, 1)
        head.factor = 1
        return head
    return OldConvDecoder(channels, classes, params["width"], factor)


def old_decoder_factor(X: np.ndarray, paths: Sequence) -> int:
    ratios = []
    for f, p in zip(X, paths):
        _, affine = label_geometry(p)
        ratios.append(np.cbrt(np.prod(spacing(f.token_affine)) / np.prod(spacing(affine))))
    factor = 2 ** int(np.floor(np.log2(np.clip(np.median(ratios), 1, MAX_FACTOR))))
    cells = max(int(np.prod(f.tokens.shape[1:])) for f in X)
    while factor > 1 and cells * factor**3 > MAX_FINE_CELLS:
        factor //= 2
    return factor


def _class_weights(targets: list, classes: int) -> torch.Tensor:
    freq = sum(frequency(t, classes) for _, t in targets)
    w = np.where(freq > 0, 1 / np.sqrt(np.maximum(freq, 1e-12) / max(freq.sum(), 1e-12)), 0.0)
    w = np.minimum(w, MAX_WEIGHT_RATIO * w[freq > 0].min())
    return torch.tensor(w / w[freq > 0].mean(), dtype=torch.float32)


def _padded(target: np.ndarray, classes: int) -> torch.Tensor:
    if target.ndim == 1:
        return nn.functional.one_hot(torch.from_numpy(target.astype(np.int64)), classes).T[None].float()
    t = torch.from_numpy(target.astype(np.float32))
    if t.shape[0] < classes:
        t = torch.cat([t, t.new_zeros((classes - t.shape[0], t.shape[1]))])
    return t[None]


def old_segmentation_fit_predict(params: dict, X_train: np.ndarray, paths: Sequence, X_eval: np.ndarray,
                                 seeds: list[int], store: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """``SegmentationTask.fit_predict`` (CPU): per eval case, float16 probabilities and their affine."""
    from monai.losses import DiceCELoss

    scaler = TokenScaler(X_train)
    kept: dict[int, torch.Tensor] = {}

    def inputs(i: int) -> torch.Tensor:
        if i not in kept:
            kept[i] = scaler(X_train[i])[None]
        return kept[i]

    factor = 1 if params["probe"] == "linear" else old_decoder_factor(X_train, paths)
    targets = [old_on_grid(p, *output_grid(f, factor), store) for f, p in zip(X_train, paths)]
    classes = max(n_labels(d) for _, d in targets)
    loss_fn = DiceCELoss(softmax=True, weight=_class_weights(targets, classes))
    channels = X_train[0].tokens.shape[0]
    probs = None
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = _build_head(params, channels, classes, factor)

        def loss(i: int) -> torch.Tensor:
            keep, dist = targets[i]
            logits = head(inputs(i)).flatten(2)
            if not dist.shape[-1]:
                return logits.sum() * 0.0
            if keep is not None:
                logits = logits[0].T[keep].T[None]
            return loss_fn(logits, _padded(dist, classes))

        old_train_head(head, len(X_train), loss, lr=params["lr"], weight_decay=params["weight_decay"],
                       epochs=params["epochs"], seed=seed, batch_cases=1)
        with torch.no_grad():
            out = [torch.softmax(head(scaler(f)[None])[0], 0).numpy() for f in X_eval]
        probs = out if probs is None else [a + b for a, b in zip(probs, out)]
    return [((p / len(seeds)).astype(np.float16), output_grid(f, factor)[0]) for f, p in zip(X_eval, probs)]


def old_voxel_slabs(probs: torch.Tensor, grid_affine: np.ndarray, voxel_affine: np.ndarray,
                    voxel_shape: Sequence[int]) -> Iterator[tuple[int, int, np.ndarray]]:
    K = probs.shape[0]
    g = np.array(probs.shape[1:], dtype=np.float64)
    m = _index_map(voxel_affine, grid_affine)
    inp = probs[None].float()
    for i0, i1 in _slabs(voxel_shape, K + 3):
        idx = _slab_indices(m, i0, i1, voxel_shape)
        norm = (2 * idx + 1) / g[:, None, None, None] - 1
        grid = torch.from_numpy(norm[::-1].transpose(1, 2, 3, 0).astype(np.float32))[None]
        out = torch.nn.functional.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=False)
        yield i0, i1, out[0].argmax(0).numpy().astype(np.uint8 if K <= 256 else np.int32)


def old_confusion_counts(probs: torch.Tensor, grid_affine: np.ndarray, labels: np.ndarray,
                         voxel_affine: np.ndarray) -> np.ndarray:
    n = max(probs.shape[0], int(labels.max(initial=0)) + 1)
    out = np.zeros((3, n), dtype=np.int64)
    for i0, i1, pred in old_voxel_slabs(probs, grid_affine, voxel_affine, labels.shape):
        truth = labels[i0:i1].astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        out[0] += np.bincount(truth[pred == truth], minlength=n)
        out[1] += np.bincount(pred, minlength=n)
        out[2] += np.bincount(truth, minlength=n)
    return out


# --- localisation -------------------------------------------------------------------------


class OldAttentionPool(nn.Module):
    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.tokens = nn.Linear(channels, width)
        self.position = nn.Linear(3, width)
        self.score = nn.Sequential(nn.GELU(), nn.Linear(width, 1))

    def forward(self, tokens: torch.Tensor, position: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        logits = self.score(self.tokens(tokens) + self.position(position))[:, 0]
        return torch.softmax(logits, 0) @ centres


def old_localisation_fit_predict(params: dict, X_train: np.ndarray, y_train: np.ndarray, X_eval: np.ndarray,
                                 seeds: list[int]) -> np.ndarray:
    """``LocalisationTask.fit_predict`` (CPU): predicted world centres ``(n_eval, 3)``."""
    scaler = TokenScaler(X_train)
    kept: dict[int, tuple] = {}

    def inputs(i: int) -> tuple:
        if i not in kept:
            kept[i] = _case(X_train[i], scaler)
        return kept[i]

    channels = X_train[0].tokens.shape[0]
    target = np.asarray(y_train, dtype=np.float64)
    preds = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = OldAttentionPool(channels, params["width"])

        def loss(i: int) -> torch.Tensor:
            toks, pos, centres, origin = inputs(i)
            rel = torch.from_numpy(target[i] - origin).float()
            return nn.functional.smooth_l1_loss(head(toks, pos, centres), rel, beta=SMOOTH_L1_BETA_MM)

        old_train_head(head, len(X_train), loss, lr=params["lr"], weight_decay=params["weight_decay"],
                       epochs=params["epochs"], seed=seed)
        with torch.no_grad():
            out = []
            for f in X_eval:
                toks, pos, centres, origin = _case(f, scaler)
                out.append(head(toks, pos, centres).double().numpy() + origin)
        preds.append(np.stack(out))
    return np.mean(preds, axis=0)


# --- the comparison ------------------------------------------------------------------------


class EpochLog:
    """Records the epochs each fit of the new path ran (early stopping) by wrapping the task
    module's ``train_head``."""

    def __init__(self, module) -> None:
        self.module, self.epochs = module, []
        self.train_head = module.train_head

    def __enter__(self) -> "EpochLog":
        def recording(*args, **kwargs):
            out = self.train_head(*args, **kwargs)
            self.epochs.append(out.epochs)
            return out

        self.module.train_head = recording
        return self

    def __exit__(self, *exc) -> None:
        self.module.train_head = self.train_head


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _old_counts(preds: list, paths: Sequence[Path]) -> list[np.ndarray]:
    out = []
    for (probs, affine), path in zip(preds, paths):
        labels, lab_affine = read_labels(path)
        out.append(old_confusion_counts(torch.from_numpy(probs.astype(np.float32)), affine, labels, lab_affine))
    return out


def _new_counts(preds: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
    return [p.counts(t) for p, t in zip(preds, targets)]


def compare_segmentation(params: dict, X: np.ndarray, paths: list[Path], splits: dict) -> dict:
    """Old and new segmentation path: timings and Dice (see the module docstring)."""
    import ctbench.tasks.segmentation as module
    from ctbench.tasks.segmentation import MaskTarget, SegmentationTask

    tr, va, te = splits["train"], splits["val"], splits["test"]
    fit = np.concatenate([tr, va])
    row: dict = {"head": params["probe"]}
    store: dict = {}
    old = lambda a, b, seeds: old_segmentation_fit_predict(params, X[a], [paths[i] for i in a], X[b], seeds, store)
    _, row["old_cold"] = _timed(lambda: old(tr, va, [0]))
    val, row["old_warm"] = _timed(lambda: old(tr, va, [0]))
    test, row["old_refit"] = _timed(lambda: old(fit, te, REFIT_SEEDS))
    counts_val, t_val = _timed(lambda: _old_counts(val, [paths[i] for i in va]))
    counts_test, t_test = _timed(lambda: _old_counts(test, [paths[i] for i in te]))
    row["old_val_dice"], row["old_test_dice"] = dice_macro_of(counts_val), dice_macro_of(counts_test)
    row["old_score_val"], row["old_score_test"] = t_val, t_test

    task = SegmentationTask.__new__(SegmentationTask)
    task.label_names, task.device = {}, "cpu"
    y = np.empty(len(paths), dtype=object)
    y[:] = [MaskTarget(p.stem, p) for p in paths]
    new = lambda a, b, seeds: task.fit_predict(params, X[a], y[a], X[b], seeds)
    with EpochLog(module) as log:
        _, row["new_cold"] = _timed(lambda: new(tr, va, [0]))
        val, row["new_warm"] = _timed(lambda: new(tr, va, [0]))
        test, row["new_refit"] = _timed(lambda: new(fit, te, REFIT_SEEDS))
    row["new_epochs"] = log.epochs
    counts_val, t_val = _timed(lambda: _new_counts(val, y[va]))
    counts_test, t_test = _timed(lambda: _new_counts(test, y[te]))
    row["new_val_dice"], row["new_test_dice"] = dice_macro_of(counts_val), dice_macro_of(counts_test)
    row["new_score_val"], row["new_score_test"] = t_val, t_test
    for who in ("old", "new"):  # a 3-trial study: cold + 2 warm trials, each scored, then the refit, scored
        row[f"{who}_study"] = (row[f"{who}_cold"] + 2 * row[f"{who}_warm"] + 3 * row[f"{who}_score_val"]
                               + row[f"{who}_refit"] + row[f"{who}_score_test"])
    return row


def compare_localisation(params: dict, X: np.ndarray, centres: np.ndarray, splits: dict) -> dict:
    import ctbench.tasks.localisation as module
    from ctbench.tasks.localisation import LocalisationTask

    tr, va, te = splits["train"], splits["val"], splits["test"]
    fit = np.concatenate([tr, va])
    err = lambda pred, idx: float(np.mean(np.linalg.norm(pred - centres[idx], axis=1)))
    row: dict = {"head": "attention-pool"}
    old = lambda a, b, seeds: old_localisation_fit_predict(params, X[a], centres[a], X[b], seeds)
    _, row["old_cold"] = _timed(lambda: old(tr, va, [0]))
    val, row["old_warm"] = _timed(lambda: old(tr, va, [0]))
    test, row["old_refit"] = _timed(lambda: old(fit, te, REFIT_SEEDS))
    row["old_val_err"], row["old_test_err"] = err(val, va), err(test, te)
    task = LocalisationTask.__new__(LocalisationTask)
    task.device = "cpu"
    new = lambda a, b, seeds: task.fit_predict(params, X[a], centres[a], X[b], seeds)
    with EpochLog(module) as log:
        _, row["new_cold"] = _timed(lambda: new(tr, va, [0]))
        val, row["new_warm"] = _timed(lambda: new(tr, va, [0]))
        test, row["new_refit"] = _timed(lambda: new(fit, te, REFIT_SEEDS))
    row["new_epochs"] = log.epochs
    row["new_val_err"], row["new_test_err"] = err(val, va), err(test, te)
    for who in ("old", "new"):
        row[f"{who}_study"] = row[f"{who}_cold"] + 2 * row[f"{who}_warm"] + row[f"{who}_refit"]
    return row


def compare_ct_mapping(seed: int = 0) -> dict:
    """Old and new mapping of one 64^3 prediction grid (8 classes, rotated 15 degrees) onto a
    512x512x300 mask of 0.7 x 0.7 x 1.5 mm voxels: seconds and whether the counts agree."""
    from scipy import ndimage

    from ctbench.tasks.dense import confusion_counts, labels_to_grid

    shape = (512, 512, 300)
    labels = np.zeros(shape, np.uint8)
    z, y_, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    balls = [((256, 256, 150), 180), ((200, 300, 120), 70), ((320, 220, 180), 50), ((256, 180, 100), 40),
             ((180, 200, 200), 30), ((300, 320, 90), 25), ((260, 260, 160), 12)]  # (centre voxel, radius)
    for k, (c, r) in enumerate(balls):
        labels[((z - c[0]) ** 2 + (y_ - c[1]) ** 2 + ((x - c[2]) * 2.1) ** 2) < r * r] = k + 1
    voxel = np.diag([0.7, 0.7, 1.5, 1.0])
    voxel[:3, 3] = -180.0
    c, s = np.cos(np.radians(15)), np.sin(np.radians(15))
    grid = np.eye(4)
    grid[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) * 6.0
    grid[:3, 3] = (-190.0, -170.0, -185.0)
    dist, _ = labels_to_grid(labels, voxel, grid, (64, 64, 64))
    rng = np.random.default_rng(seed)
    probs = ndimage.gaussian_filter(dist, (0, 1, 1, 1)) + 0.05 * rng.random(dist.shape)
    probs = torch.from_numpy((probs / probs.sum(0)).astype(np.float16).astype(np.float32))
    old, t_old = _timed(lambda: old_confusion_counts(probs, grid, labels, voxel))
    new, t_new = _timed(lambda: confusion_counts(probs, grid, labels, voxel))
    return {"old_s": t_old, "new_s": t_new, "counts_equal": bool(np.array_equal(old, new))}


def _ratio(old: float, new: float) -> str:
    return f"{old / new:7.1f}x" if new > 0 else "    inf"


def print_table(summary: dict) -> None:
    a = summary["args"]
    n_test = a["cases"] - N_TRAIN - N_VAL
    print(f"dense heads on {a['cases']} phantom cases ({N_TRAIN} train / {N_VAL} val / {n_test} test): "
          f"{TOKENS}^3 tokens x {CHANNELS} channels, labels on {VOXELS}^3 voxels of {VOXEL_MM:g} mm; "
          f"lr {a['lr']:g}, epochs {a['epochs']}, data seed {a['seed']}; CPU, 1 thread")
    print(f"{'head':15} {'stage':26} {'old s':>8} {'new s':>8} {'speed-up':>8}   {'old':>8} {'new':>8}  metric")
    for r in summary["rows"]:
        seg = "old_val_dice" in r
        metric = ("dice_macro", "old_val_dice", "new_val_dice", "old_test_dice", "new_test_dice") if seg else \
                 ("centre error mm", "old_val_err", "new_val_err", "old_test_err", "new_test_err")
        lines = [("trial, cold (label grids)", "cold", None), ("trial, warm", "warm", (metric[1], metric[2], "val")),
                 (f"refit, {len(REFIT_SEEDS)} seeds", "refit", (metric[3], metric[4], "test"))]
        if seg:
            lines += [("Dice scoring, val", "score_val", None), ("Dice scoring, test", "score_test", None)]
        lines.append(("3-trial study + refit", "study", None))
        for label, key, m in lines:
            o, n = r[f"old_{key}"], r[f"new_{key}"]
            tail = f"   {r[m[0]]:8.4f} {r[m[1]]:8.4f}  {m[2]} {metric[0]}" if m else ""
            print(f"{r['head']:15} {label:26} {o:8.2f} {n:8.2f} {_ratio(o, n)}{tail}")
        e = r["new_epochs"]
        print(f"{r['head']:15} epochs run (new; old: all {a['epochs']}): trials {e[0]}, {e[1]}; refit seeds "
              f"{', '.join(map(str, e[2:]))}")
    ct = summary["ct_mapping"]
    if ct:
        print(f"{'mapping':15} {'64^3 grid -> 512x512x300':26} {ct['old_s']:8.2f} {ct['new_s']:8.2f} "
              f"{_ratio(ct['old_s'], ct['new_s'])}   voxel counts equal: {ct['counts_equal']}")


def main(argv: list[str] | None = None) -> dict:
    """Run both paths and print the table (or JSON); returns the summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=20, help="epoch budget of every head")
    ap.add_argument("--lr", type=float, default=0.01, help="learning rate of every head")
    ap.add_argument("--noise", type=float, default=0.5, help="token noise sd")
    ap.add_argument("--seed", type=int, default=0, help="data seed")
    ap.add_argument("--heads", nargs="*", default=["decoder", "linear", "attention-pool"])
    ap.add_argument("--no-ct-mapping", action="store_true", help="skip the CT-sized mapping")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    if args.cases <= N_TRAIN + N_VAL:
        ap.error(f"--cases must exceed {N_TRAIN + N_VAL} (train + validation)")
    idx = np.arange(args.cases)
    splits = {"train": idx[:N_TRAIN], "val": idx[N_TRAIN : N_TRAIN + N_VAL], "test": idx[N_TRAIN + N_VAL :]}
    common = {"lr": args.lr, "weight_decay": 1e-4, "epochs": args.epochs}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, single_threaded():
        X, paths, centres = make_cases(Path(tmp), args.cases, args.seed, args.noise)
        for head in args.heads:
            if head == "attention-pool":
                rows.append(compare_localisation({"probe": head, "width": 32, **common}, X, centres, splits))
            else:
                extra = {"width": 32} if head == "decoder" else {}
                rows.append(compare_segmentation({"probe": head, **common, **extra}, X, paths, splits))
        ct = None if args.no_ct_mapping else compare_ct_mapping(args.seed)
    summary = {"args": vars(args), "rows": rows, "ct_mapping": ct}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)
    return summary


if __name__ == "__main__":
    main()
