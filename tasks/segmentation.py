"""Segmentation from a model's token grid, scored on each case's original voxels.

Training labels are put onto the head's output grid through ``token_affine``: each cell's target
is the label distribution of the original voxels falling in it (their majority label for label
sets over 16; the nearest voxel for cells finer than the scan; cells outside the scan are left
out), see :func:`ctbench.tasks.dense.labels_to_grid`.

Heads (``probe``), the same search space for every model (:mod:`ctbench.tasks.segmentation_heads`):
- ``linear``: a per-token linear classifier (a 1x1x1 convolution) on standardised tokens;
- ``decoder``: a light 3-D conv decoder computed on the token grid (1x1 stem, three residual
  depthwise-separable 3x3x3 blocks) whose output is ``factor`` times finer: per token, coarse
  logits upsampled trilinearly plus sub-cell logits (pixel shuffle), then learnt per-class
  3-tap filters along each axis of the fine grid. ``factor`` = the largest
  power of two <= 4 that keeps its cells no smaller than the scans' voxels (median over training
  cases), so its label grid is finer than the tokens but never finer than the data.
Loss: per case, MONAI's ``DiceCELoss`` (softmax Dice + cross-entropy on the soft targets) on the
valid cells, class-weighted by inverse square-root training frequency (capped at 5x the commonest
class's weight) against class imbalance, averaged over the cases of a step.

Training (:mod:`ctbench.tasks.dense_train`, :mod:`ctbench.tasks.segmentation_fit`): labels go
onto each case's output grid once per run (kept by the case's :class:`MaskTarget`); the
standardised tokens and label grids of the training cases are stacked per token-grid shape once
per training set and kept by the task across trials and refit seeds; a step is one case (it
holds thousands of labelled cells; prediction is batched over cases of one shape); AdamW
with a cosine schedule over the tuned ``epochs``, stopping early once the training loss has not
improved by 1% for 3 epochs (the engine scores validation itself, so the head never sees it).
Heads train and predict on the run's ``--device`` (``device``; ``auto``: CUDA when visible),
single-threaded on the CPU as every probe of the engine. Both are stochastic (random
initialisation and case order), so the engine refits them with several seeds and this task
averages the seeds' class probabilities per cell before the argmax.

Changed in this version of the probe (numbers move): the decoder ran a block and a transposed
convolution at every doubling of the grid (up to 64 times the token cells at ``factor`` 4); it
now runs its blocks on the token grid and upsamples its logits, several times cheaper per step at
a Dice within seed noise of the old one (``benchmarks/dense_heads.py``). Training stops on a
plateau of the training loss.

Predicted class probabilities are interpolated trilinearly from the output grid's world positions
to every original voxel (``grid_sample`` through the composed affines, slab by slab) and the
argmax is scored: Dice per class (per case, ignoring cases whose truth lacks the class, as MONAI's
``DiceMetric(ignore_empty=True)``, averaged over cases) and their macro mean over the foreground
classes present in the ground truth (the main metric). Dice alone never sees a class predicted on a
case whose truth lacks it, so false positives there are reported beside it, lower is better: per
class, over the cases without the class, the false-positive case rate ``fp_rate_<class>`` (fraction
of them with any voxel predicted as the class) and the mean false-positive volume ``fp_ml_<class>``
(predicted voxels x the original voxel volume, |det| of the mask affine, in mL); ``fp_rate_macro``
and ``fp_ml_macro`` average them over the foreground classes that have such cases.

predictions.csv holds these per case and structure (``dice_<name>``, ``fp_ml_<name>``), so the
leaderboards re-score saved results without the masks (:mod:`ctbench.tasks.segmentation_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ctbench.bootstrap import MetricFn
from ctbench.datasets import TaskSpec
from ctbench.errors import CTBenchError
from ctbench.registry import register_task
from ctbench.task import Metric, TaskOption
from ctbench.tasks.dense import (
    DenseTask, confusion_counts, label_geometry, labels_to_grid, predict_labels, read_labels, spacing,
)
from ctbench.tasks.dense_train import train_head
from ctbench.tasks.segmentation_fit import build_training_set, output_grid, predict_probs
from ctbench.tasks.segmentation_heads import build_head
from ctbench.tasks.segmentation_scores import layout_metrics, read_layout, structure_names
from ctbench.threads import single_threaded

ANY_HEAD = "any"  # the --head default: Optuna picks among all heads

HEADS = ("linear", "decoder")
MAX_FACTOR = 4
SOFT_TARGET_LABELS = 16  # label sets up to this size train on soft (distribution) targets
MAX_FINE_CELLS = 1 << 23  # the decoder's output grid is kept below this many cells per case
FP_PREFIXES = ("fp_rate_", "fp_ml_")  # false-positive measures on cases without the class


@dataclass(eq=False)
class MaskTarget:
    """One case's ground-truth label map, read from disk only when needed; its labels on a
    head's grid are computed once and kept (float16) for the next trials."""

    case_id: str
    path: Path
    _grids: dict = field(default_factory=dict, repr=False)
    _geometry: tuple[tuple[int, ...], np.ndarray] | None = field(default=None, repr=False)

    def geometry(self) -> tuple[tuple[int, ...], np.ndarray]:
        """Shape and affine of the label map, read from the header once."""
        if self._geometry is None:
            self._geometry = label_geometry(self.path)
        return self._geometry

    def voxel_ml(self) -> float:
        """Volume of one original voxel in mL (|det| of the affine's 3x3 in mm^3 / 1000): false-positive
        volumes are counted on these voxels."""
        return abs(float(np.linalg.det(np.asarray(self.geometry()[1])[:3, :3]))) / 1000.0

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            return read_labels(self.path)
        except CTBenchError as e:
            raise CTBenchError(f"case {self.case_id!r}: {e}") from None

    def on_grid(self, affine: np.ndarray, shape: tuple[int, ...]) -> tuple[torch.Tensor | None, np.ndarray]:
        """Training targets on that grid: a boolean mask of the valid cells ``(N,)`` (None when
        all are) and their labels: distributions ``(L, Nv)`` float16, or majority labels
        ``(Nv,)`` int16 when the label set is larger than ``SOFT_TARGET_LABELS``."""
        key = (tuple(shape), np.asarray(affine, np.float64).tobytes())
        if key not in self._grids:
            labels, lab_affine = self.read()
            soft = int(labels.max(initial=0)) < SOFT_TARGET_LABELS
            dist, valid = labels_to_grid(labels, lab_affine, affine, shape, soft=soft)
            flat = valid.ravel()
            keep = None if flat.all() else torch.from_numpy(flat)
            if soft:
                self._grids[key] = (keep, dist.reshape(dist.shape[0], -1)[:, flat].astype(np.float16))
            else:
                self._grids[key] = (keep, dist.ravel()[flat].astype(np.int16))
        return self._grids[key]


@dataclass(eq=False)
class SegPrediction:
    """Class probabilities ``(K, *grid)`` (float16) on a grid with its index -> world affine;
    the voxel counts against a target are computed once on the original grid and kept."""

    probs: np.ndarray
    affine: np.ndarray
    _counts: dict = field(default_factory=dict, repr=False)

    def counts(self, target: MaskTarget) -> np.ndarray:
        """``(3, n)`` intersection / predicted / true voxel counts per label (original grid)."""
        if target.case_id not in self._counts:
            labels, affine = target.read()
            self._counts[target.case_id] = confusion_counts(
                torch.from_numpy(self.probs.astype(np.float32)), self.affine, labels, affine)
        return self._counts[target.case_id]

    def labels(self, target: MaskTarget) -> tuple[np.ndarray, np.ndarray]:
        """The predicted label map on the target's original voxel grid, and that grid's affine."""
        shape, affine = target.geometry()
        return predict_labels(torch.from_numpy(self.probs.astype(np.float32)), self.affine, affine, shape), affine


def dice_table(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-case Dice of every label ``(n_cases, n_labels)``; NaN where the truth lacks it."""
    counts = [p.counts(t) for t, p in zip(y, pred)]
    n = max(c.shape[1] for c in counts)
    out = np.full((len(counts), n), np.nan)
    for i, c in enumerate(counts):
        inter, p, t = c
        present = t > 0
        out[i, : c.shape[1]][present] = 2 * inter[present] / (p[present] + t[present])
    return out


def dice_macro(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over foreground labels present in the truth of the per-class mean Dice over cases."""
    table = dice_table(y, pred)[:, 1:]
    seen = ~np.all(np.isnan(table), axis=0)
    if not seen.any():
        raise ValueError("no foreground label in these cases' ground truth")
    return float(np.mean(np.nanmean(table[:, seen], axis=0)))


def false_positive_ml(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-case predicted volume in mL of every label on the cases whose truth lacks it
    ``(n_cases, n_labels)`` (all of it is false positive); NaN where the truth holds the label."""
    counts = [p.counts(t) for t, p in zip(y, pred)]
    n = max(c.shape[1] for c in counts)
    out = np.zeros((len(counts), n))
    for i, (c, t) in enumerate(zip(counts, y)):
        out[i, : c.shape[1]] = c[1] * t.voxel_ml()
        out[i, : c.shape[1]][c[2] > 0] = np.nan
    return out


def _fp_of(label: int | None, rate: bool) -> MetricFn:
    """False-positive case rate (``rate``) or mean volume (mL) of ``label`` over the cases
    without it; ``label=None``: their mean over the foreground labels that have such cases."""

    def fn(y: np.ndarray, pred: np.ndarray) -> float:
        table = false_positive_ml(y, pred)
        table = np.where(np.isnan(table), np.nan, table > 0) if rate else table
        if label is not None:
            col = table[:, label] if label < table.shape[1] else np.zeros(len(table))
            if np.all(np.isnan(col)):
                raise ValueError(f"every case holds label {label}: no false positive can be scored")
            return float(np.nanmean(col))
        table = table[:, 1:]
        seen = ~np.all(np.isnan(table), axis=0)
        if not seen.any():
            raise ValueError("every case holds every foreground label: no false positive can be scored")
        return float(np.mean(np.nanmean(table[:, seen], axis=0)))

    return fn


def _dice_of(label: int) -> MetricFn:
    def fn(y: np.ndarray, pred: np.ndarray) -> float:
        table = dice_table(y, pred)
        col = table[:, label] if label < table.shape[1] else np.array([np.nan])
        if np.all(np.isnan(col)):
            raise ValueError(f"label {label} is absent from these cases' ground truth")
        return float(np.nanmean(col))

    return fn


def decoder_factor(X: np.ndarray, y: np.ndarray) -> int:
    """Upsampling of the decoder: a power of two <= ``MAX_FACTOR`` whose cells stay no smaller
    than the scans' voxels (median ratio of cell sizes over the training cases)."""
    ratios = []
    for f, t in zip(X, y):
        _, affine = t.geometry()
        ratios.append(np.cbrt(np.prod(spacing(f.token_affine)) / np.prod(spacing(affine))))
    factor = 2 ** int(np.floor(np.log2(np.clip(np.median(ratios), 1, MAX_FACTOR))))
    cells = max(int(np.prod(f.tokens.shape[1:])) for f in X)
    while factor > 1 and cells * factor**3 > MAX_FINE_CELLS:
        factor //= 2
    return factor


@register_task("segmentation")
class SegmentationTask(DenseTask):
    """Label maps from token grids (linear head or conv decoder), Dice on the original voxels."""

    category = "segmentation"
    probe_modules = ("ctbench.tasks.dense_train", "ctbench.tasks.segmentation_fit", "ctbench.tasks.segmentation_heads")
    options = (TaskOption("head", str, ANY_HEAD, "head family Optuna may pick: 'any' (the shared search space), "
                                               "or one of " + ", ".join(repr(h) for h in HEADS) + " only"),)
    _scored_structures: tuple[str, ...] | None = None  # set by the first from_prediction_frame

    def __init__(self, spec, dataset, device: str | None = None, head: str | None = None) -> None:
        self.head = head or ANY_HEAD
        if self.head != ANY_HEAD and self.head not in HEADS:
            raise CTBenchError(f"--head {self.head!r} is not a segmentation head; use {ANY_HEAD!r} or one of "
                               f"{', '.join(HEADS)}")
        if len(spec.targets) != 1:
            raise CTBenchError(f"task {spec.name!r}: segmentation needs one target column holding "
                               f"label-map paths, got {list(spec.targets)}; fix the dataset card")
        self.label_names: dict[int, str] = dict(spec.label_names)  # ids seen in training are added
        super().__init__(spec, dataset, device)

    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        out = np.empty(len(rows), dtype=object)
        for i, (case, path) in enumerate(zip(rows["case_id"], rows[self.spec.targets[0]])):
            out[i] = MaskTarget(str(case), self.dataset.resolve(path))
        return out

    def validate_targets(self, rows: pd.DataFrame) -> None:
        """Targets are label-map paths (not numbers): each is checked when its mask is read."""

    def suggest(self, trial, seed: int) -> dict:
        """The shared search space (same for every model), over the heads ``head`` allows."""
        probe = trial.suggest_categorical("probe", list(HEADS) if self.head == ANY_HEAD else [self.head])
        params = {
            "probe": probe,
            "lr": trial.suggest_float("lr", 1e-3, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "epochs": trial.suggest_int("epochs", 10, 40, step=10),
        }
        if probe == "decoder":
            params["width"] = trial.suggest_categorical("width", [16, 32, 64])
        return params

    def probe_settings(self) -> dict:
        """The head families searched (recorded; a restricted search gets its own study and results)."""
        return {"head": self.head}

    def default_probe_settings(self) -> dict:
        return {"head": ANY_HEAD}

    def fit_predict(self, params, X_train, y_train, X_eval, seeds) -> np.ndarray:
        with single_threaded():
            return self._fit_predict(params, X_train, y_train, X_eval, seeds)

    def _fit_predict(self, params: dict, X_train: np.ndarray, y_train: np.ndarray, X_eval: np.ndarray,
                     seeds: list[int]) -> np.ndarray:
        dev = self.head_device()
        factor = 1 if params["probe"] == "linear" else decoder_factor(X_train, y_train)
        train = self.fit_cache().get(("segmentation", factor, str(dev)), X_train, y_train,
                                     lambda: build_training_set(X_train, y_train, factor, dev))
        for c in train.seen:
            self.label_names.setdefault(int(c), str(c))
        channels = X_train[0].tokens.shape[0]
        probs = None
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                head = build_head(params, channels, train.classes, factor, HEADS).to(dev)
            train_head(head, train.data.groups, train.loss(head), lr=params["lr"],
                       weight_decay=params["weight_decay"], epochs=params["epochs"], seed=seed,
                       batch_cases=train.batch_cases)
            out = predict_probs(head, X_eval, train.scaler, factor, dev)
            probs = out if probs is None else [a + b for a, b in zip(probs, out)]  # summed over seeds
        pred = np.empty(len(X_eval), dtype=object)
        for i, (f, p) in enumerate(zip(X_eval, probs)):
            pred[i] = SegPrediction((p / len(seeds)).astype(np.float16), output_grid(f, factor)[0])
        return pred

    def metric_table(self) -> dict[str, Metric]:
        names = sorted(self.label_names.items())
        fns: dict[str, MetricFn] = {"dice_macro": dice_macro, **{f"dice_{n}": _dice_of(c) for c, n in names}}
        fns |= {"fp_rate_macro": _fp_of(None, rate=True), "fp_ml_macro": _fp_of(None, rate=False)}
        for c, n in names:
            fns |= {f"fp_rate_{n}": _fp_of(c, rate=True), f"fp_ml_{n}": _fp_of(c, rate=False)}
        return {name: Metric(name, fn, "minimize" if name.startswith(FP_PREFIXES) else "maximize", "label maps")
                for name, fn in fns.items()}

    def prediction_columns(self, y, pred) -> dict[str, np.ndarray]:
        """Per case: ``dice_macro`` (its mean over the structures it holds) and, for every
        foreground label of the table (named or not, see :meth:`structure_ids`), ``dice_<name>``
        (NaN where the truth lacks it) and ``fp_ml_<name>`` (NaN where the truth holds it or
        the label was not scored on the case): what :meth:`from_prediction_frame` reads back."""
        table, fp = dice_table(y, pred), false_positive_ml(y, pred)
        widths = np.array([p.counts(t).shape[1] for t, p in zip(y, pred)])  # labels scored per case
        cols = {"dice_macro": np.array([np.nanmean(r[1:]) if np.isfinite(r[1:]).any() else np.nan
                                        for r in table])}
        for c in self.structure_ids(table.shape[1]):
            name = self.label_names.get(c, str(c))
            cols[f"dice_{name}"] = table[:, c] if c < table.shape[1] else np.full(len(y), np.nan)
            cols[f"fp_ml_{name}"] = np.where(widths > c, fp[:, c] if c < fp.shape[1] else 0.0, np.nan)
        return cols

    def structure_ids(self, n_labels: int) -> list[int]:
        """Foreground labels written per case: every label below ``n_labels`` (the width of the
        test cases' Dice table) and every named one."""
        return sorted(set(range(1, n_labels)) | {c for c in self.label_names if c > 0})

    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Per-case presence and Dice of each structure and its false-positive volume, in the
        layout of :mod:`ctbench.tasks.segmentation_scores` (masks are not read again). The first
        frame read fixes the structures (its ``dice_<name>`` columns); later frames must have them."""
        if self._scored_structures is None:
            self._scored_structures = structure_names(frame.columns)
        return read_layout(frame, self._scored_structures, self.spec.name)

    def rescoring_metrics(self) -> dict[str, MetricFn]:
        """The task's metrics on the read-back layout, for the structures of the frames read so
        far (none before the first: then only the macro means)."""
        return layout_metrics(self._scored_structures or ())

    @classmethod
    def for_scoring(cls, spec: TaskSpec) -> "SegmentationTask":
        task = super().for_scoring(spec)
        task.label_names = dict(spec.label_names)
        return task

    def write_artifacts(self, folder: Path, y: np.ndarray, pred: np.ndarray) -> list[str]:
        """Predicted label maps of the test cases on their original voxel grids (NIfTI)."""
        import gzip

        import nibabel as nib

        from ctbench.atomic import atomic_path

        written = []
        for t, p in zip(y, pred):
            labels, affine = p.labels(t)
            img = nib.Nifti1Image(labels, affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            name = f"predicted_masks/{t.case_id}.nii.gz"
            with atomic_path(Path(folder) / name) as tmp:
                tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))
            written.append(name)
        return written
