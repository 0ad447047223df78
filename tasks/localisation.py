"""Localisation of a target (e.g. the largest lesion's centre) from a model's token grid.

Probe: an attention-pooled coordinate regressor. Each cell gets an attention logit from its
(standardised) token plus an embedding of its normalised world position; a softmax over the
cells weights the cells' world centres (from ``token_affine``), and their weighted mean is the
prediction, in world RAS mm. So the output is in world space for every model whatever its grid,
and the loss is a smooth-L1 in millimetres (AdamW with a cosine schedule, four cases per step).
Optuna tunes the learning rate, weight decay, width and epochs in one search space shared by
every model. Cases without a target (NaN) are left out by ``usable``.

Training (:mod:`ctbench.tasks.dense_train`): the training cases' standardised tokens, cell
positions and centres are stacked per token-grid shape once per training set and kept by the
task across trials and refit seeds; a step is one batched forward over four cases of one shape
(with a single grid shape, the same batches as the earlier case-by-case loop); training stops
early once the training loss has not improved by 1% for 3 epochs (the engine scores validation
itself, so the head never sees it).

The head trains and predicts on the run's ``--device`` (``device``; ``auto``: CUDA when visible),
single-threaded on the CPU as every probe of the engine. It is stochastic (random initialisation
and case order), so the engine refits it with several seeds and this task averages their
predicted centres (world mm) per case.

Metrics: mean centre error (mm, the main metric, lower is better) and the hit rates within
5, 10 and 20 mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from ctbench import target_checks
from ctbench.bootstrap import MetricFn
from ctbench.task import Metric
from ctbench.errors import CTBenchError
from ctbench.registry import register_task
from ctbench.tasks.dense import DenseTask, TokenScaler, grid_world, normalised_positions
from ctbench.tasks.dense_train import BATCH_CASES, GroupedCases, shape_groups, train_head
from ctbench.threads import single_threaded
from ctbench.types import Features

HIT_RADII_MM = (5, 10, 20)
SMOOTH_L1_BETA_MM = 1.0
PREDICT_CELLS = 1 << 16  # grid cells per prediction batch


class AttentionPool(nn.Module):
    """Softmax attention over grid cells; returns the weighted mean of their world centres."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.tokens = nn.Linear(channels, width)
        self.position = nn.Linear(3, width)  # embedding of the cell's normalised position
        self.score = nn.Sequential(nn.GELU(), nn.Linear(width, 1))

    def forward(self, tokens: torch.Tensor, position: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """tokens ``(..., N, C)``, position ``(..., N, 3)`` in [-1, 1], centres ``(..., N, 3)`` mm
        -> ``(..., 3)`` (leading axes: cases of one grid shape)."""
        logits = self.score(self.tokens(tokens) + self.position(position))[..., 0]
        return (torch.softmax(logits, -1).unsqueeze(-2) @ centres).squeeze(-2)


def _case(f: Features, scaler: TokenScaler) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """Head inputs of one case: tokens (N, C), positions (N, 3), centres relative to the grid's
    mean (N, 3, float32-safe), and that mean (mm, float64)."""
    toks = scaler(f).reshape(f.tokens.shape[0], -1).T
    world = grid_world(f.token_affine, f.tokens.shape[1:])
    origin = world.mean(0)
    pos = torch.from_numpy(normalised_positions(world))
    centres = torch.from_numpy((world - origin).astype(np.float32))
    return toks, pos, centres, origin


@dataclass
class LocTrainingSet:
    """The stacked training cases every trial and refit seed on them shares."""

    scaler: TokenScaler
    data: GroupedCases  # per case: tokens, positions, centres, target relative to the grid's mean

    def loss(self, head: AttentionPool) -> Callable[[np.ndarray], torch.Tensor]:
        """``batch_loss(rows)``: smooth-L1 (mm) of ``head``, averaged over cases and axes."""

        def batch_loss(rows: np.ndarray) -> torch.Tensor:
            toks, pos, centres, rel = self.data.batch(rows)
            return nn.functional.smooth_l1_loss(head(toks, pos, centres), rel, beta=SMOOTH_L1_BETA_MM)

        return batch_loss


def build_training_set(X: np.ndarray, y: np.ndarray, device: torch.device) -> LocTrainingSet:
    """Standardise the training cases with their own statistics and stack them per grid shape."""
    scaler = TokenScaler(X)
    target = np.asarray(y, dtype=np.float64)

    def make(i: int) -> tuple[torch.Tensor, ...]:
        toks, pos, centres, origin = _case(X[i], scaler)
        rel = torch.from_numpy(target[i] - origin).float()  # float64 difference first
        return toks, pos, centres, rel

    sizes = [4 * (f.tokens.shape[0] + 6) * int(np.prod(f.tokens.shape[1:])) for f in X]
    return LocTrainingSet(scaler, GroupedCases([f.tokens.shape[1:] for f in X], make, sizes, device=device))


@torch.no_grad()
def predict_centres(head: AttentionPool, X: np.ndarray, scaler: TokenScaler, device: torch.device) -> np.ndarray:
    """World centres ``(n, 3)`` (mm, float64) of every case, batched by grid shape."""
    out = np.zeros((len(X), 3))
    for group in shape_groups([f.tokens.shape[1:] for f in X]):
        step = max(1, PREDICT_CELLS // int(np.prod(X[group[0]].tokens.shape[1:])))
        for s in range(0, len(group), step):
            chunk = group[s : s + step]
            cases = [_case(X[i], scaler) for i in chunk]
            toks, pos, centres = (torch.stack([c[k] for c in cases]).to(device) for k in range(3))
            out[chunk] = head(toks, pos, centres).double().cpu().numpy() + np.stack([c[3] for c in cases])
    return out


def centre_errors(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Euclidean distance (mm) between true and predicted centres, per case."""
    return np.linalg.norm(np.asarray(y, float).reshape(-1, 3) - np.asarray(pred, float).reshape(-1, 3), axis=1)


def _hit_rate(radius: float) -> MetricFn:
    def fn(y: np.ndarray, pred: np.ndarray) -> float:
        return float(np.mean(centre_errors(y, pred) <= radius))

    fn.__name__ = f"hit_rate_{radius}mm"
    return fn


def mean_centre_error(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(centre_errors(y, pred)))


@register_task("localisation")
class LocalisationTask(DenseTask):
    """World-space point localisation from token grids (attention-pooled coordinate regressor)."""

    category = "localisation"

    def __init__(self, spec, dataset, device: str | None = None) -> None:
        if len(spec.targets) != 3:
            raise CTBenchError(
                f"task {spec.name!r}: localisation needs three target columns (world x, y, z in "
                f"mm, RAS), got {list(spec.targets)}; fix the dataset card"
            )
        super().__init__(spec, dataset, device)

    def validate_targets(self, rows: pd.DataFrame) -> None:
        """Centres are numbers (world mm), given for all three axes or none (no target)."""
        cols = list(self.spec.targets)
        for col in cols:
            target_checks.numbers_in(self.dataset, rows, col, "localisation centres (world x, y, z in mm)")
        given = rows[cols].notna()
        partial = given.any(axis=1) & ~given.all(axis=1)
        for col in cols:
            target_checks.refuse(self.dataset, rows, col, partial & ~given[col],
                                 "a centre needs all three coordinates (or none: no target)")

    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        """``(n, 3)`` world RAS mm from the task's three target columns (x, y, z)."""
        return rows[list(self.spec.targets)].to_numpy(dtype=np.float64)

    def suggest(self, trial, seed: int) -> dict:
        """The shared search space (same for every model)."""
        return {
            "probe": "attention-pool",
            "lr": trial.suggest_float("lr", 5e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
            "width": trial.suggest_categorical("width", [16, 32, 64]),
            "epochs": trial.suggest_int("epochs", 10, 60, step=10),
        }

    def fit_predict(self, params, X_train, y_train, X_eval, seeds) -> np.ndarray:
        with single_threaded():
            return self._fit_predict(params, X_train, y_train, X_eval, seeds)

    def _fit_predict(self, params: dict, X_train: np.ndarray, y_train: np.ndarray, X_eval: np.ndarray,
                     seeds: list[int]) -> np.ndarray:
        dev = self.head_device()
        train = self.fit_cache().get(("localisation", str(dev)), X_train, y_train,
                                     lambda: build_training_set(X_train, y_train, dev))
        channels = X_train[0].tokens.shape[0]
        preds = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                head = AttentionPool(channels, params["width"]).to(dev)
            train_head(head, train.data.groups, train.loss(head), lr=params["lr"],
                       weight_decay=params["weight_decay"], epochs=params["epochs"], seed=seed,
                       batch_cases=BATCH_CASES)
            preds.append(predict_centres(head, X_eval, train.scaler, dev))
        return np.mean(preds, axis=0)  # per case, the mean of the seeds' centres

    def metric_table(self) -> dict[str, Metric]:
        out = {"centre_error_mm": Metric("centre_error_mm", mean_centre_error, "minimize", "centres")}
        for r in HIT_RADII_MM:
            out[f"hit_rate_{r}mm"] = Metric(f"hit_rate_{r}mm", _hit_rate(r), "maximize", "centres")
        return out

    def prediction_columns(self, y, pred) -> dict[str, np.ndarray]:
        cols = {}
        for j, name in enumerate(self.spec.targets):
            cols[f"y_{name}"] = y[:, j]
            cols[f"p_{name}"] = pred[:, j]
        cols["error_mm"] = centre_errors(y, pred)
        return cols

    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """True and predicted centres ``(n, 3)`` (world mm) from the ``y_``/``p_`` columns: the
        layout :meth:`metrics` scores, so re-scoring uses them as they are."""
        y = self._columns(frame, [f"y_{t}" for t in self.spec.targets]).astype(np.float64)
        p = self._columns(frame, [f"p_{t}" for t in self.spec.targets]).astype(np.float64)
        return y, p
