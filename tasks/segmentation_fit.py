"""Training sets and batched prediction of the segmentation heads.

A training set is built once per (training cases, output grid) and kept by the task across
trials and refit seeds (:class:`ctbench.tasks.dense_train.FitCache`): each case's labels on the
grid come from its target's own cache (computed once per case and grid), its tokens are
standardised with the training statistics, and cases of one token-grid shape are stacked
(:class:`ctbench.tasks.dense_train.GroupedCases`). Cases whose labelled volume misses the grid
entirely hold no target and are left out.

Cases per optimiser step: one (``BATCH_CASES``), as before: a case holds thousands of labelled
cells. Four cases per step were tried on the data of ``benchmarks/dense_heads.py``: at the same
epoch budget that makes four times fewer optimiser steps and lowered Dice (linear head 0.54 ->
0.49 at the same learning rate, decoder 0.69 -> 0.67), while a decoder step on the CPU is
compute-bound, so it saved little time. Prediction is batched (up to ``PREDICT_CELLS`` output
cells per forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from ctbench.tasks.dense import TokenScaler, refine_affine
from ctbench.tasks.dense_train import GroupedCases, shape_groups
from ctbench.tasks.segmentation_heads import class_weights, dice_ce_loss
from ctbench.types import Features

BATCH_CASES = 1  # cases per optimiser step (see the module docstring)
PREDICT_CELLS = 1 << 18  # output cells per prediction batch


class GridTarget(Protocol):
    """A case's labels, on any grid (:class:`ctbench.tasks.segmentation.MaskTarget`)."""

    def on_grid(self, affine: np.ndarray, shape: tuple[int, ...]) -> tuple[torch.Tensor | None, np.ndarray]: ...


def output_grid(f: Features, factor: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Affine and shape of a case's output grid, ``factor`` times finer than its tokens."""
    shape = tuple(int(n) * factor for n in f.tokens.shape[1:])
    return refine_affine(f.token_affine, factor), shape


def n_labels(target: np.ndarray) -> int:
    """Labels a stored target covers: rows of a distribution, or max label + 1."""
    return target.shape[0] if target.ndim == 2 else int(target.max(initial=0)) + 1


def frequency(target: np.ndarray, classes: int) -> np.ndarray:
    """Labelled volume (cells) of each class in a stored target."""
    if target.ndim == 2:
        out = np.zeros(classes)
        out[: target.shape[0]] = target.astype(np.float64).sum(1)
        return out
    return np.bincount(target.astype(np.int64), minlength=classes).astype(np.float64)


def dense_target(keep: torch.Tensor | None, stored: np.ndarray, shape: tuple[int, ...],
                 classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stored target on its whole grid: soft ``(classes, *shape)`` float16 (zero rows for labels
    absent from the case, zero on invalid cells) or hard labels ``shape`` int16 (-1 on invalid
    cells); and the valid cells ``shape`` bool."""
    n = int(np.prod(shape))
    valid = torch.ones(n, dtype=torch.bool) if keep is None else keep
    if stored.ndim == 2:
        t = torch.zeros(classes, n, dtype=torch.float16)
        t[: stored.shape[0], valid] = torch.from_numpy(stored)
        return t.reshape(classes, *shape), valid.reshape(shape)
    t = torch.full((n,), -1, dtype=torch.int16)
    t[valid] = torch.from_numpy(stored.astype(np.int16))
    return t.reshape(shape), valid.reshape(shape)


@dataclass
class SegTrainingSet:
    """What every trial and refit seed on the same cases and grid shares."""

    factor: int
    classes: int
    seen: np.ndarray  # foreground labels with labelled training cells
    weight: torch.Tensor  # class weights, on the device
    scaler: TokenScaler
    data: GroupedCases  # rows: the training cases with a target on their grid
    batch_cases: int

    def loss(self, head: torch.nn.Module) -> Callable[[np.ndarray], torch.Tensor]:
        """``batch_loss(rows)`` of ``head`` for :func:`ctbench.tasks.dense_train.train_head`."""

        def batch_loss(rows: np.ndarray) -> torch.Tensor:
            x, target, valid = self.data.batch(rows)
            return dice_ce_loss(head(x), target, valid, self.weight)

        return batch_loss


def build_training_set(X: Sequence[Features], y: Sequence[GridTarget], factor: int,
                       device: torch.device) -> SegTrainingSet:
    """Stack the training cases for heads with output grids ``factor`` times finer."""
    grids = [output_grid(f, factor) for f in X]
    targets = [t.on_grid(*g) for t, g in zip(y, grids)]
    classes = max(n_labels(d) for _, d in targets)
    freq = sum(frequency(d, classes) for _, d in targets)
    rows = [i for i, (_, d) in enumerate(targets) if d.shape[-1]]
    if not rows:
        raise ValueError("no training case has labelled voxels on its token grid; check the masks' "
                         "and the tokens' affines")
    scaler = TokenScaler(X)

    def make(r: int) -> tuple[torch.Tensor, ...]:
        i = rows[r]
        return (scaler(X[i]), *dense_target(*targets[i], grids[i][1], classes))

    def size(i: int) -> int:
        cells = int(np.prod(grids[i][1]))
        per_cell = 2 * classes if targets[i][1].ndim == 2 else 2
        return 4 * int(np.prod(X[i].tokens.shape)) + cells * (per_cell + 1)

    data = GroupedCases([X[i].tokens.shape[1:] for i in rows], make, [size(i) for i in rows], device=device)
    return SegTrainingSet(
        factor=factor, classes=classes, seen=np.flatnonzero(freq[1:]) + 1, weight=class_weights(freq).to(device),
        scaler=scaler, data=data, batch_cases=BATCH_CASES,
    )


@torch.no_grad()
def predict_probs(head: torch.nn.Module, X: Sequence[Features], scaler: TokenScaler, factor: int,
                  device: torch.device) -> list[np.ndarray]:
    """Class probabilities ``(K, *output grid)`` float32 of every case, batched by grid shape."""
    out: list[np.ndarray | None] = [None] * len(X)
    for group in shape_groups([f.tokens.shape[1:] for f in X]):
        cells = int(np.prod(X[group[0]].tokens.shape[1:])) * factor**3
        step = max(1, PREDICT_CELLS // cells)
        for s in range(0, len(group), step):
            chunk = group[s : s + step]
            x = torch.stack([scaler(X[i]) for i in chunk]).to(device)
            probs = torch.softmax(head(x).float(), 1).cpu().numpy()
            for i, p in zip(chunk, probs):
                out[i] = p
    return out  # type: ignore[return-value]
