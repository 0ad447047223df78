"""Classification (binary, multi-class, multi-label) on global embeddings.

Probes: logistic regression and a one-hidden-layer MLP (shared search space). Metrics: AUROC
(macro over labels / one-vs-rest over classes), AUPRC, balanced accuracy and F1 (macro).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

from ctbench import probes
from ctbench.bootstrap import MetricFn
from ctbench.errors import CTBenchError
from ctbench.registry import register_task
from ctbench.task import ProbeTask


def _binary_labels(pred: np.ndarray) -> np.ndarray:
    return (pred >= 0.5).astype(int)


def _multiclass_labels(pred: np.ndarray) -> np.ndarray:
    return pred.argmax(axis=1)


@register_task("classification")
class ClassificationTask(ProbeTask):
    """Binary, multi-class or multi-label labels from embeddings (logistic / MLP probes).

    Scores are probabilities: ``(n,)`` binary, ``(n, K)`` multi-class, ``(n, L)`` multi-label.
    """

    category = "classification"

    @property
    def kind(self) -> str:
        if self.spec.kind:
            return self.spec.kind
        return "multilabel" if len(self.spec.targets) > 1 else "binary"

    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        cols = list(self.spec.targets)
        if self.kind == "multilabel":
            return rows[cols].to_numpy().astype(int)
        y = rows[cols[0]].to_numpy()
        if self.kind == "binary":
            values = set(np.unique(y).tolist())
            if not values <= {0, 1}:
                raise CTBenchError(
                    f"binary target {cols[0]!r} holds {sorted(values)[:5]}; use 0/1 labels or "
                    f"declare the task kind 'multiclass' in the dataset card"
                )
            return y.astype(int)
        return y.astype(int)

    def suggest(self, trial, seed: int) -> dict:
        return probes.suggest(trial, probes.FAMILIES, "classifier")

    def fit_predict(self, params, X_train, y_train, X_eval, seeds) -> np.ndarray:
        preds = []
        for s in seeds:
            model = probes.build(params, "classifier", s, multilabel=self.kind == "multilabel")
            model.fit(X_train, y_train)
            p = model.predict_proba(X_eval)
            if self.kind == "binary":
                p = p[:, 1]
            elif self.kind == "multiclass":
                p = _align_classes(p, model.classes_, self.n_classes(y_train))
            preds.append(p)
        return np.mean(preds, axis=0)

    def n_classes(self, y: np.ndarray) -> int:
        return int(max(np.max(y), 0)) + 1

    def metrics(self) -> dict[str, MetricFn]:
        kind = self.kind
        if kind == "multiclass":
            to_labels = _multiclass_labels
            auroc = lambda y, p: roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(p.shape[1]))  # noqa: E731
            auprc = lambda y, p: average_precision_score(np.eye(p.shape[1])[y], p, average="macro")  # noqa: E731
        else:
            to_labels = _binary_labels
            auroc = lambda y, p: roc_auc_score(y, p, average="macro")  # noqa: E731
            auprc = lambda y, p: average_precision_score(y, p, average="macro")  # noqa: E731
        return {
            "auroc": auroc,
            "auprc": auprc,
            "balanced_accuracy": lambda y, p: _balanced_accuracy(y, to_labels(p), kind),
            "f1": lambda y, p: f1_score(y, to_labels(p), average="macro" if kind != "binary" else "binary", zero_division=0),
        }

    def prediction_columns(self, y, pred) -> dict[str, np.ndarray]:
        if self.kind == "binary":
            return {f"y_{self.spec.targets[0]}": y, f"p_{self.spec.targets[0]}": pred}
        if self.kind == "multilabel":
            cols = {}
            for j, name in enumerate(self.spec.targets):
                cols[f"y_{name}"] = y[:, j]
                cols[f"p_{name}"] = pred[:, j]
            return cols
        cols = {f"y_{self.spec.targets[0]}": y}
        for k in range(pred.shape[1]):
            cols[f"p_class{k}"] = pred[:, k]
        return cols


    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "multiclass":
            probs = sorted((c for c in frame.columns if c.startswith("p_class")), key=lambda c: int(c[7:]))
            y = self._columns(frame, [f"y_{self.spec.targets[0]}"])[:, 0].astype(int)
            return y, self._columns(frame, probs or ["p_class0"]).astype(float)
        y = self._columns(frame, [f"y_{t}" for t in self.spec.targets]).astype(int)
        p = self._columns(frame, [f"p_{t}" for t in self.spec.targets]).astype(float)
        return (y[:, 0], p[:, 0]) if self.kind == "binary" else (y, p)


def _align_classes(p: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
    """Place per-class probabilities in columns 0..k-1 even when train lacked a class."""
    out = np.zeros((p.shape[0], max(k, int(classes.max()) + 1)))
    out[:, classes.astype(int)] = p
    return out


def _balanced_accuracy(y: np.ndarray, labels: np.ndarray, kind: str) -> float:
    if kind != "multilabel":
        return float(balanced_accuracy_score(y, labels))
    per_label = []
    for j in range(y.shape[1]):
        if len(np.unique(y[:, j])) < 2:
            raise ValueError("balanced accuracy needs both classes of every label")
        per_label.append(balanced_accuracy_score(y[:, j], labels[:, j]))
    return float(np.mean(per_label))
