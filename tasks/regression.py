"""Regression of measured quantities from frozen features (ridge, cosine kNN, MLP or attentive
probes, one family per run; targets standardised with training statistics).

Metrics: MAE, RMSE, R^2 and Pearson r; with several targets each is the mean over targets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from ctbench import probes
from ctbench import weighted_metrics as wm
from ctbench.family_task import FamilyProbeTask
from ctbench.metrics_batch import Batched
from ctbench.probe_attentive import AttentiveProbe, attentive_params
from ctbench.registry import register_task
from ctbench.task import Metric


def pearson(y: np.ndarray, p: np.ndarray) -> float:
    """Pearson r, averaged over targets; undefined (ValueError) for a constant column."""
    y2, p2 = y.reshape(len(y), -1), p.reshape(len(p), -1)
    rs = []
    for j in range(y2.shape[1]):
        if np.ptp(y2[:, j]) == 0 or np.ptp(p2[:, j]) == 0:
            raise ValueError("Pearson r is undefined for a constant column")
        rs.append(pearsonr(y2[:, j], p2[:, j]).statistic)
    return float(np.mean(rs))


def regression_metrics() -> dict[str, Batched]:
    """MAE, RMSE, R^2 and Pearson r (each averaged over targets): plain scikit-learn / scipy
    metrics that the bootstrap can also score on all resamples at once."""
    return {
        "mae": Batched(mean_absolute_error, wm.mae),
        "rmse": Batched(root_mean_squared_error, wm.rmse),
        "r2": Batched(r2_score, wm.r2),
        "pearson_r": Batched(pearson, wm.pearson),
    }


@register_task("regression")
class RegressionTask(FamilyProbeTask):
    """Continuous targets from frozen features (ridge, kNN, MLP or attentive probes)."""

    category = "regression"

    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        y = rows[list(self.spec.targets)].to_numpy(dtype=np.float64)
        return y[:, 0] if y.shape[1] == 1 else y

    def suggest_family(self, trial, family: str) -> dict:
        return probes.suggest(trial, family, "regressor")

    def is_stochastic(self, params: dict) -> bool:
        return probes.is_stochastic(params)

    def fit_predict(self, params, X_train, y_train, X_eval, seeds) -> np.ndarray:
        preds = []
        for s in seeds:
            if params["probe"] == "attentive":
                p = self._attentive(params, X_train, y_train, X_eval, s)
            else:
                model = probes.build(params, "regressor", s, X_train.shape[1], n_train=len(X_train))
                model.fit(X_train, y_train)
                p = model.predict(X_eval)
            preds.append(np.asarray(p).reshape((len(X_eval),) + y_train.shape[1:]))
        return np.mean(preds, axis=0)

    def _attentive(self, params, X_train, y_train, X_eval, seed: int) -> np.ndarray:
        """Attentive probe on targets standardised with training statistics (mean squared error)."""
        import torch

        y = np.asarray(y_train, dtype=np.float64).reshape(len(y_train), -1)
        mu, sd = y.mean(axis=0), y.std(axis=0) + 1e-12
        probe = AttentiveProbe(**attentive_params(params), seed=seed, n_out=y.shape[1],
                               loss=torch.nn.functional.mse_loss, device=self.probe_device)
        return probe.fit(X_train, (y - mu) / sd).predict(X_eval) * sd + mu

    def metric_table(self) -> dict[str, Metric]:
        lower = {"mae", "rmse"}
        return {name: Metric(name, fn, "minimize" if name in lower else "maximize", "values")
                for name, fn in regression_metrics().items()}

    def prediction_columns(self, y, pred) -> dict[str, np.ndarray]:
        y2, p2 = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
        cols = {}
        for j, name in enumerate(self.spec.targets):
            cols[f"y_{name}"] = y2[:, j]
            cols[f"p_{name}"] = p2[:, j]
        return cols

    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        y = self._columns(frame, [f"y_{t}" for t in self.spec.targets]).astype(float)
        p = self._columns(frame, [f"p_{t}" for t in self.spec.targets]).astype(float)
        return (y[:, 0], p[:, 0]) if y.shape[1] == 1 else (y, p)
