"""Survival from frozen features: penalised Cox on PCA features (family ``linear``), a deep-Cox
MLP (``mlp``) or an attentive probe over the token set trained on the Cox partial likelihood
(``attentive``), one family per run. kNN is not offered: neighbours' outcomes give no risk score
for censored times without a survival estimator of its own, which would be a different probe.

Main metric Harrell's C-index; time-dependent AUC at the dataset card's horizons, else at the
quartiles of the *training* split's event times (never the test split's); a Kaplan-Meier plot of
the predicted high/low risk groups (split at the median risk) saved beside the result.

Search space (dimension-free, as every shared space): penalised Cox on whitened PCA components
keeping ``var_ratio`` of the standardised features' variance (at most :data:`MAX_PCA` components,
the same cap for every model), with a per-component penalty; a deep-Cox MLP (absolute width,
learning rate, decoupled weight decay, epochs); the attentive probe's absolute space
(:mod:`ctbench.probe_attentive`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ctbench import target_checks
from ctbench.atomic import atomic_path
from ctbench.errors import CTBenchError
from ctbench.family_task import FamilyProbeTask
from ctbench.metrics_batch import Batched
from ctbench.probe_attentive import AttentiveProbe, attentive_params, suggest_attentive
from ctbench.registry import register_task
from ctbench.task import Metric

from .survival_batch import c_index_batch, td_auc_batch
from .survival_metrics import c_index, time_dependent_auc
from .survival_probes import DeepCox, PCACox, cox_partial_nll

MIN_EVENTS = 5


def training_horizons(manifest: pd.DataFrame, time_col: str, event_col: str) -> tuple[float, ...]:
    """Quartiles of the event times in the training split: test outcomes never shape a metric."""
    train = manifest[(manifest["split"] == "train") & (manifest[event_col] == 1)]
    return tuple(float(q) for q in np.quantile(train[time_col].dropna(), [0.25, 0.5, 0.75]))


@register_task("survival")
class SurvivalTask(FamilyProbeTask):
    """Time-to-event targets (time, event) from frozen features (penalised Cox, deep-Cox or attentive probes)."""

    category = "survival"
    families = ("linear", "mlp", "attentive")
    unsupported_families = {"knn": "neighbours' outcomes give no risk score for censored times"}
    HEADS = {"linear": "coxph", "mlp": "deepcox", "attentive": "attentive"}  # family -> the ``probe`` param
    probe_modules = ("ctbench.tasks.survival_probes", "ctbench.tasks.survival_metrics", "ctbench.tasks.survival_batch")

    def __init__(self, spec, dataset) -> None:
        dataset.require_columns(list(spec.targets))
        if len(spec.targets) != 2:
            raise CTBenchError(f"survival task {spec.name!r} needs targets (time, event), got {spec.targets}")
        time_col, event_col = spec.targets
        m = dataset.manifest
        self.spec, self.dataset = spec, dataset
        self.validate_targets(m)  # before the event count and horizons are read from the columns
        events = m.loc[m["split"] == "train", event_col].fillna(0).astype(bool)
        if events.sum() < MIN_EVENTS:
            raise CTBenchError(
                f"survival task {spec.name!r}: only {int(events.sum())} events in the train split; "
                f"a Cox probe needs at least {MIN_EVENTS}"
            )
        self.horizons = tuple(spec.horizons) or training_horizons(m, time_col, event_col)
        super().__init__(spec, dataset)  # validates again (cheap): the shared contract

    def validate_targets(self, rows: pd.DataFrame) -> None:
        """Times must be numbers >= 0; events 0 (censored) or 1 (event)."""
        time_col, event_col = self.spec.targets
        times = target_checks.numbers_in(self.dataset, rows, time_col, "survival times")
        target_checks.refuse(self.dataset, rows, time_col, times < 0, "survival times must be >= 0 (negative times)")
        target_checks.binary_in(self.dataset, rows, event_col, "survival events", " (0 censored, 1 event)")

    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        time_col, event_col = self.spec.targets
        return np.stack([rows[time_col].to_numpy(float), rows[event_col].to_numpy(float)], axis=1)

    def suggest_family(self, trial, family: str) -> dict:
        head = trial.suggest_categorical("probe", [self.HEADS[family]])
        if head == "attentive":
            return {"probe": head, **suggest_attentive(trial)}
        if head == "coxph":
            return {
                "probe": head,
                "var_ratio": trial.suggest_float("var_ratio", 0.5, 0.99),
                "penalizer": trial.suggest_float("penalizer", 1e-3, 10.0, log=True),
                "l1_ratio": trial.suggest_float("l1_ratio", 0.0, 1.0),
            }
        return {
            "probe": head,
            "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
            "epochs": trial.suggest_int("epochs", 50, 300, step=50),
        }

    def is_stochastic(self, params: dict) -> bool:
        """The deep-Cox MLP and the attentive probe depend on their seed; PCA + Cox does not
        (fixed PCA solver seed)."""
        return params["probe"] in ("deepcox", "attentive")

    def fit_predict(self, params, X_train, y_train, X_eval, seeds) -> np.ndarray:
        p = {k: v for k, v in params.items() if k != "probe"}
        if params["probe"] == "coxph":
            return PCACox(**p).fit(X_train, y_train).predict(X_eval)
        if params["probe"] == "attentive":
            return np.mean([self._attentive(params, X_train, y_train, X_eval, s) for s in seeds], axis=0)
        preds = [DeepCox(**p, seed=s).fit(X_train, y_train).predict(X_eval) for s in seeds]
        return np.mean(preds, axis=0)

    def _attentive(self, params, X_train, y_train, X_eval, seed: int) -> np.ndarray:
        """Attentive probe trained on the negative Cox partial likelihood; returns the risk."""
        def loss(out, y):
            return cox_partial_nll(out[:, 0], y[:, 0], y[:, 1])

        probe = AttentiveProbe(**attentive_params(params), seed=seed, n_out=1, loss=loss, device=self.probe_device)
        return probe.fit(X_train, y_train).predict(X_eval)[:, 0]

    def metric_table(self) -> dict[str, Metric]:
        """C-index and time-dependent AUCs, each also scored on all bootstrap resamples at once
        (:mod:`ctbench.tasks.survival_batch`)."""
        out = {"c_index": Metric("c_index", Batched(c_index, c_index_batch), "maximize", "risk")}
        for h in self.horizons:
            fn = Batched(partial(time_dependent_auc, horizon=h), partial(td_auc_batch, horizon=h))
            out[f"td_auc@{h:g}"] = Metric(f"td_auc@{h:g}", fn, "maximize", "risk")
        return out

    def prediction_columns(self, y, pred) -> dict[str, np.ndarray]:
        time_col, event_col = self.spec.targets
        return {f"y_{time_col}": y[:, 0], f"y_{event_col}": y[:, 1], "risk": pred}

    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        time_col, event_col = self.spec.targets
        y = self._columns(frame, [f"y_{time_col}", f"y_{event_col}"]).astype(float)
        return y, self._columns(frame, ["risk"])[:, 0].astype(float)

    @classmethod
    def for_scoring(cls, spec) -> "SurvivalTask":
        task = super().for_scoring(spec)
        task.horizons = tuple(spec.horizons)
        return task

    def write_artifacts(self, folder: Path, y: np.ndarray, pred: np.ndarray) -> list[str]:
        """Kaplan-Meier curves of the test cases split at the median predicted risk."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from lifelines import KaplanMeierFitter

        high = pred > np.median(pred)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        rows = []
        for name, mask in (("low risk", ~high), ("high risk", high)):
            if mask.sum() == 0:
                continue
            km = KaplanMeierFitter(label=f"{name} (n={int(mask.sum())})").fit(y[mask, 0], y[mask, 1])
            km.plot_survival_function(ax=ax, ci_show=True)
            sf = km.survival_function_
            rows += [{"group": name, "time": t, "survival": s} for t, s in zip(sf.index, sf.iloc[:, 0])]
        ax.set_xlabel("time")
        ax.set_ylabel("survival probability")
        ax.set_title("Kaplan-Meier by predicted risk (median split)")
        fig.tight_layout()
        with atomic_path(folder / "km.png") as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        with atomic_path(folder / "km.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        return ["km.png", "km.csv"]
