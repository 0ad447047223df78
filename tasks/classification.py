"""Classification (binary, multi-class, multi-label) on global embeddings.

Probes (one family per run, :mod:`ctbench.probes`): logistic regression, cosine kNN and a
one-hidden-layer MLP on a vector view, or an attentive probe over the token set. Metrics: AUROC
(macro over labels / one-vs-rest over classes), AUPRC, balanced accuracy and F1 (macro).

Multi-label and multi-class AUROC, AUPRC and (multi-label) balanced accuracy average only over
the labels both of whose classes occur in the set scored: a label that is all 0 or all 1 in a
test set or bootstrap resample (small data, ``--train-fraction``) is left out of that average
instead of making it NaN; the value is NaN only when no label is defined. The labels left out
on the test set are listed in :data:`UNDEFINED_LABELS_FILE` next to the result. Binary metrics
are unchanged (NaN where the set holds one class).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

from ctbench import probes, target_checks
from ctbench.family_task import FamilyProbeTask
from ctbench.probe_attentive import AttentiveProbe, attentive_params
from ctbench import weighted_metrics as wm
from ctbench.atomic import atomic_write_text
from ctbench.metrics_batch import Batched
from ctbench.registry import register_task
from ctbench.task import Metric

UNDEFINED_LABELS_FILE = "undefined_labels.json"
MACRO_OVER_DEFINED = ("auroc", "auprc", "balanced_accuracy")  # metrics that skip undefined labels


def _binary_labels(pred: np.ndarray) -> np.ndarray:
    return (pred >= 0.5).astype(int)


def _multiclass_labels(pred: np.ndarray) -> np.ndarray:
    return pred.argmax(axis=1)


@register_task("classification")
class ClassificationTask(FamilyProbeTask):
    """Binary, multi-class or multi-label labels from frozen features (linear, kNN, MLP or attentive probes).

    Scores are probabilities: ``(n,)`` binary, ``(n, K)`` multi-class, ``(n, L)`` multi-label.
    """

    category = "classification"

    @property
    def kind(self) -> str:
        if self.spec.kind:
            return self.spec.kind
        return "multilabel" if len(self.spec.targets) > 1 else "binary"

    def label_columns(self) -> list[str]:
        """The target columns this kind reads: all for multi-label, the first otherwise."""
        cols = list(self.spec.targets)
        return cols if self.kind == "multilabel" else cols[:1]

    def validate_targets(self, rows: pd.DataFrame) -> None:
        """Binary and multi-label targets must be 0 or 1; multi-class labels class indices
        0, 1, 2, ...; text is refused for all (one message naming column, case and value)."""
        for col in self.label_columns():
            if self.kind == "multiclass":
                target_checks.class_indices_in(self.dataset, rows, col)
            else:
                target_checks.binary_in(self.dataset, rows, col, "binary/multi-label targets",
                                        " (for class indices declare kind 'multiclass' in the dataset card)")

    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        """Labels as integers (validated by :meth:`validate_targets` when the task was built)."""
        y = rows[self.label_columns()].to_numpy(dtype=np.float64).astype(int)
        return y if self.kind == "multilabel" else y[:, 0]

    def suggest_family(self, trial, family: str) -> dict:
        return probes.suggest(trial, family, "classifier")

    def is_stochastic(self, params: dict) -> bool:
        return probes.is_stochastic(params)

    def fit_predict(self, params, X_train, y_train, X_eval, seeds) -> np.ndarray:
        if params["probe"] == "attentive":
            return np.mean([self._attentive(params, X_train, y_train, X_eval, s) for s in seeds], axis=0)
        preds = []
        for s in seeds:
            model = probes.build(params, "classifier", s, X_train.shape[1], multilabel=self.kind == "multilabel",
                                 n_train=len(X_train))
            model.fit(X_train, y_train)
            p = model.predict_proba(X_eval)
            if self.kind == "binary":
                p = p[:, 1]
            elif self.kind == "multiclass":
                p = _align_classes(p, model.classes_, self.n_classes(y_train))
            elif isinstance(p, list):  # kNN: one (n, classes) array per label
                p = np.stack([_positive(q, c) for q, c in zip(p, model[-1].classes_)], axis=1)
            preds.append(p)
        return np.mean(preds, axis=0)

    def _attentive(self, params, X_train, y_train, X_eval, seed: int) -> np.ndarray:
        """Attentive probe: sigmoid cross-entropy per label (binary, multi-label) or softmax
        cross-entropy over the classes (multi-class); returns probabilities."""
        import torch

        if self.kind == "multiclass":
            k = self.n_classes(y_train)
            target = np.eye(k)[np.asarray(y_train, dtype=int)]
            loss = lambda out, y: torch.nn.functional.cross_entropy(out, y)  # noqa: E731  (soft targets)
        else:
            target = np.asarray(y_train, dtype=np.float64).reshape(len(y_train), -1)
            k = target.shape[1]
            loss = torch.nn.functional.binary_cross_entropy_with_logits
        probe = AttentiveProbe(**attentive_params(params), seed=seed, n_out=k, loss=loss,
                               device=self.probe_device).fit(X_train, target)
        out = torch.from_numpy(probe.predict(X_eval))
        if self.kind == "multiclass":
            return torch.softmax(out, dim=1).numpy()
        p = torch.sigmoid(out).numpy()
        return p[:, 0] if self.kind == "binary" else p

    def n_classes(self, y: np.ndarray) -> int:
        return int(max(np.max(y), 0)) + 1

    def metric_table(self) -> dict[str, Metric]:
        return {name: Metric(name, fn, "maximize", "probabilities")
                for name, fn in classification_metrics(self.kind).items()}

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

    def label_names(self, n: int) -> list[str]:
        """Names of the ``n`` labels a macro average runs over: targets, or ``class<k>``."""
        if self.kind == "multiclass":
            return [f"class{k}" for k in range(n)]
        return list(self.spec.targets)[:n]

    def write_artifacts(self, folder: Path, y: np.ndarray, pred: np.ndarray) -> list[str]:
        """List the labels left out of the test set's macro averages (one class only), if any;
        otherwise remove such a list left in ``folder`` by an earlier run."""
        path = Path(folder) / UNDEFINED_LABELS_FILE
        skipped = []  # binary metrics skip nothing (NaN where the set holds one class)
        if self.kind != "binary":
            y2 = one_hot(y, pred.shape[1]) if self.kind == "multiclass" else np.asarray(y)
            skipped = [name for name, ok in zip(self.label_names(y2.shape[1]), defined_labels(y2)) if not ok]
        if not skipped:
            path.unlink(missing_ok=True)  # a rerun into the same folder: no stale list survives
            return []
        record = {"undefined_on_test": skipped, "metrics": list(MACRO_OVER_DEFINED),
                  "reason": "one class only in the test set; left out of these macro averages "
                            "(bootstrap resamples skip labels undefined on them the same way)"}
        atomic_write_text(path, json.dumps(record, indent=2))
        return [UNDEFINED_LABELS_FILE]

    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "multiclass":
            probs = sorted((c for c in frame.columns if c.startswith("p_class")), key=lambda c: int(c[7:]))
            y = self._columns(frame, [f"y_{self.spec.targets[0]}"])[:, 0].astype(int)
            return y, self._columns(frame, probs or ["p_class0"]).astype(float)
        y = self._columns(frame, [f"y_{t}" for t in self.spec.targets]).astype(int)
        p = self._columns(frame, [f"p_{t}" for t in self.spec.targets]).astype(float)
        return (y[:, 0], p[:, 0]) if self.kind == "binary" else (y, p)


def classification_metrics(kind: str) -> dict[str, Batched]:
    """AUROC, AUPRC, balanced accuracy and F1 for ``kind`` (binary, multiclass, multilabel).

    Each is a plain ``metric(y, pred)`` (scikit-learn) that the bootstrap can also score on all
    resamples at once (the matching kernel of :mod:`ctbench.weighted_metrics`)."""
    if kind == "multiclass":
        to_labels = _multiclass_labels
        auroc = Batched(lambda y, p: macro_over_defined(roc_auc_score, one_hot(y, p.shape[1]), p),
                        lambda y, p, c: wm.macro_auroc(one_hot(y, p.shape[1]), p, c))
        auprc = Batched(lambda y, p: macro_over_defined(average_precision_score, one_hot(y, p.shape[1]), p),
                        lambda y, p, c: wm.macro_average_precision(one_hot(y, p.shape[1]), p, c))
    elif kind == "multilabel":
        to_labels = _binary_labels
        auroc = Batched(lambda y, p: macro_over_defined(roc_auc_score, y, p), wm.macro_auroc)
        auprc = Batched(lambda y, p: macro_over_defined(average_precision_score, y, p), wm.macro_average_precision)
    else:
        to_labels = _binary_labels
        auroc = Batched(lambda y, p: roc_auc_score(y, p, average="macro"), wm.binary_auroc)
        auprc = Batched(lambda y, p: average_precision_score(y, p, average="macro"), wm.binary_average_precision)
    ba_kernel = wm.balanced_accuracy_multilabel if kind == "multilabel" else wm.balanced_accuracy
    f1_kernel = {"binary": wm.f1_binary, "multiclass": wm.f1_macro_multiclass}.get(kind, wm.f1_macro_multilabel)
    return {
        "auroc": auroc,
        "auprc": auprc,
        "balanced_accuracy": Batched(lambda y, p: _balanced_accuracy(y, to_labels(p), kind),
                                     lambda y, p, c: ba_kernel(y, to_labels(p), c)),
        "f1": Batched(lambda y, p: f1_score(y, to_labels(p), average="macro" if kind != "binary" else "binary",
                                            zero_division=0),
                      lambda y, p, c: f1_kernel(y, to_labels(p), c)),
    }


def _positive(p: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The probability of class 1 from one label's ``predict_proba`` (0 when train lacked it)."""
    hit = np.flatnonzero(np.asarray(classes) == 1)
    return p[:, hit[0]] if len(hit) else np.zeros(len(p))


def _align_classes(p: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
    """Place per-class probabilities in columns 0..k-1 even when train lacked a class."""
    out = np.zeros((p.shape[0], max(k, int(classes.max()) + 1)))
    out[:, classes.astype(int)] = p
    return out


def one_hot(y: np.ndarray, k: int) -> np.ndarray:
    """Class indices ``(n,)`` -> ``(n, k)`` 0/1 indicators (one-vs-rest labels)."""
    y = np.asarray(y).astype(int)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"class labels outside 0..{k - 1}")
    return (y[:, None] == np.arange(k)[None, :]).astype(int)


def defined_labels(y: np.ndarray) -> np.ndarray:
    """Per column of 0/1 labels ``(n, L)``: True where both classes occur."""
    y = np.asarray(y)
    return (y.min(axis=0) != y.max(axis=0)) if len(y) else np.zeros(y.shape[1], dtype=bool)


def macro_over_defined(fn: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, p: np.ndarray) -> float:
    """Mean of ``fn(y[:, j], p[:, j])`` over the labels ``j`` with both classes in ``y``.

    Labels with one class are skipped with a warning; NaN when no label is defined."""
    y, p = np.asarray(y), np.asarray(p)
    ok = defined_labels(y)
    if not ok.any():
        return float("nan")
    if not ok.all():
        warnings.warn(f"labels {np.flatnonzero(~ok).tolist()} hold one class only; left out of the macro "
                      f"average", UserWarning, stacklevel=2)
    return float(np.mean([fn(y[:, j], p[:, j]) for j in np.flatnonzero(ok)]))


def _balanced_accuracy(y: np.ndarray, labels: np.ndarray, kind: str) -> float:
    if kind != "multilabel":
        return float(balanced_accuracy_score(y, labels))
    return macro_over_defined(balanced_accuracy_score, y, labels)
