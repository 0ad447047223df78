"""Vectorised classification and regression metrics over integer case weights.

Each kernel takes ``counts`` ``(B, n)`` (how often each case is in each of ``B`` resamples) and
returns ``(B,)`` values equal, up to float rounding, to the scikit-learn / scipy metric on the
resample with the rows repeated: AUROC (Mann-Whitney, ties 1/2), average precision, balanced
accuracy, F1, MAE, RMSE, R^2 and Pearson r, with the same NaN / zero rules on degenerate
resamples. Inputs they cannot mirror (non-finite values, labels outside 0/1) raise ``ValueError``.
"""

from __future__ import annotations

import numpy as np


def _finite(*arrays: np.ndarray) -> None:
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise ValueError("non-finite input")


def _zero_one(y: np.ndarray) -> np.ndarray:
    """0/1 labels as booleans; other values raise (the batched rules assume 0/1)."""
    y = np.asarray(y)
    _finite(y.astype(float))
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels other than 0/1")
    return y.astype(bool)


def _tied_class_weights(counts_t: np.ndarray, pos: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per distinct score, scores ascending: two ``(n_distinct, B)``.

    Works on the transposed counts ``(n, B)`` so gathers, sums and cumulative sums run along
    contiguous rows."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    c = counts_t[order]
    wpos = c * pos[order][:, None]
    if len(s) and np.any(s[1:] == s[:-1]):  # ties: one row per distinct score
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        c, wpos = np.add.reduceat(c, starts, axis=0), np.add.reduceat(wpos, starts, axis=0)
    return wpos, c - wpos


def auroc_columns(pos: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC per label column: ``(B, L)``, NaN where a resample holds one class of that label."""
    counts_t = np.ascontiguousarray(counts.T)
    out = np.empty((counts.shape[0], pos.shape[1]))
    for j in range(pos.shape[1]):
        wpos, wneg = _tied_class_weights(counts_t, pos[:, j], score[:, j])
        below = np.cumsum(wneg, axis=0) - wneg  # negative weight strictly below each score
        u = np.sum(wpos * (below + 0.5 * wneg), axis=0)
        pn = wpos.sum(axis=0) * wneg.sum(axis=0)
        out[:, j] = np.where(pn > 0, u / np.where(pn > 0, pn, 1.0), np.nan)
    return out


def average_precision_columns(pos: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average precision per label column ``(B, L)``: sum over thresholds of recall gain x precision.

    A resample without positives scores 0, as scikit-learn does (recall set to one)."""
    counts_t = np.ascontiguousarray(counts.T)
    out = np.empty((counts.shape[0], pos.shape[1]))
    for j in range(pos.shape[1]):
        wpos, wneg = _tied_class_weights(counts_t, pos[:, j], -score[:, j])  # highest score first
        tp, fp = np.cumsum(wpos, axis=0), np.cumsum(wneg, axis=0)
        called = tp + fp
        precision = np.where(called > 0, tp / np.where(called > 0, called, 1.0), 0.0)
        n_pos = tp[-1]
        gain = np.sum(wpos * precision, axis=0)
        out[:, j] = np.where(n_pos > 0, gain / np.where(n_pos > 0, n_pos, 1.0), 0.0)
    return out


def defined_columns(pos: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(B, L)``: True where a resample holds both classes of a label."""
    n_pos = counts @ pos.astype(np.float64)
    return (n_pos > 0) & (n_pos < counts.sum(axis=1, keepdims=True))


def mean_over_defined(values: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """Row mean of ``values`` over the ``defined`` cells; NaN where a row has none."""
    k = defined.sum(axis=1)
    total = np.where(defined, values, 0.0).sum(axis=1)
    return np.where(k > 0, total / np.maximum(k, 1), np.nan)


def binary_auroc(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Binary AUROC, NaN on a resample with one class."""
    _finite(p)
    return auroc_columns(_zero_one(y)[:, None], np.asarray(p, float)[:, None], counts)[:, 0]


def binary_average_precision(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Binary average precision (0 on a resample without positives)."""
    _finite(p)
    return average_precision_columns(_zero_one(y)[:, None], np.asarray(p, float)[:, None], counts)[:, 0]


def macro_auroc(pos: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean AUROC over the label columns defined on each resample."""
    _finite(p)
    pos = _zero_one(pos)
    return mean_over_defined(auroc_columns(pos, np.asarray(p, float), counts), defined_columns(pos, counts))


def macro_average_precision(pos: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean average precision over the label columns defined on each resample."""
    _finite(p)
    pos = _zero_one(pos)
    return mean_over_defined(average_precision_columns(pos, np.asarray(p, float), counts),
                             defined_columns(pos, counts))


def _class_tallies(y: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per class seen in ``y`` or ``labels``: weights of true, predicted and correct, ``(B, C)`` each."""
    y, labels = np.asarray(y).ravel(), np.asarray(labels).ravel()
    classes = np.unique(np.concatenate([y, labels]))
    is_true = (y[:, None] == classes[None, :]).astype(np.float64)
    is_pred = (labels[:, None] == classes[None, :]).astype(np.float64)
    return counts @ is_true, counts @ is_pred, counts @ (is_true * is_pred)


def balanced_accuracy(y: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present in each resample's ``y`` (binary or multi-class)."""
    true, _, hit = _class_tallies(y, labels, counts)
    present = true > 0
    return mean_over_defined(hit / np.where(present, true, 1.0), present)


def f1_binary(y: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """F1 of class 1 (0 when nothing is true or predicted positive)."""
    pos, called = _zero_one(y).astype(np.float64), _zero_one(labels).astype(np.float64)
    return _f1(counts @ pos, counts @ called, counts @ (pos * called))


def _f1(true: np.ndarray, called: np.ndarray, hit: np.ndarray) -> np.ndarray:
    denom = true + called
    return np.where(denom > 0, 2 * hit / np.where(denom > 0, denom, 1.0), 0.0)


def f1_macro_multiclass(y: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Macro F1 over the classes true or predicted in each resample."""
    true, called, hit = _class_tallies(y, labels, counts)
    return mean_over_defined(_f1(true, called, hit), (true + called) > 0)


def f1_macro_multilabel(y: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Macro F1 over all label columns (0 for a label neither true nor predicted)."""
    pos, called = _zero_one(y).astype(np.float64), _zero_one(labels).astype(np.float64)
    return _f1(counts @ pos, counts @ called, counts @ (pos * called)).mean(axis=1)


def balanced_accuracy_multilabel(y: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over defined label columns of (sensitivity + specificity) / 2."""
    pos, called = _zero_one(y).astype(np.float64), _zero_one(labels).astype(np.float64)
    w = counts.sum(axis=1, keepdims=True)
    n_pos, tp = counts @ pos, counts @ (pos * called)
    tn = counts @ ((1 - pos) * (1 - called))
    n_neg = w - n_pos
    defined = (n_pos > 0) & (n_neg > 0)
    value = (tp / np.where(defined, n_pos, 1.0) + tn / np.where(defined, n_neg, 1.0)) / 2
    return mean_over_defined(value, defined)


def _columns(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim not in (1, 2):
        raise ValueError("targets and predictions differ in shape")
    _finite(y, p)
    return y.reshape(len(y), -1), p.reshape(len(p), -1)


def mae(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean absolute error, averaged over targets."""
    y, p = _columns(y, p)
    return (counts @ np.abs(y - p) / counts.sum(axis=1, keepdims=True)).mean(axis=1)


def rmse(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Root mean squared error per target, averaged over targets."""
    y, p = _columns(y, p)
    return np.sqrt(counts @ (y - p) ** 2 / counts.sum(axis=1, keepdims=True)).mean(axis=1)


def _drawn_range(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Max minus min of ``values`` ``(n,)`` over the cases drawn in each resample."""
    drawn = counts > 0
    return np.where(drawn, values, -np.inf).max(axis=1) - np.where(drawn, values, np.inf).min(axis=1)


def _centred(values: np.ndarray, counts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``values - weighted mean`` for each resample: ``(B, n)``."""
    return values[None, :] - (counts @ values / w)[:, None]


def r2(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """R^2 per target averaged over targets; NaN under two rows; a constant target scores 1 when
    predicted exactly, else 0 (scikit-learn's ``force_finite`` rule)."""
    y, p = _columns(y, p)
    w = counts.sum(axis=1)
    scores = np.empty((counts.shape[0], y.shape[1]))
    for j in range(y.shape[1]):
        ss_res = counts @ (y[:, j] - p[:, j]) ** 2
        constant = _drawn_range(y[:, j], counts) == 0
        ss_tot = np.where(constant, 0.0, np.sum(counts * _centred(y[:, j], counts, w) ** 2, axis=1))
        ok = ss_tot > 0
        scores[:, j] = np.where(ok, 1 - ss_res / np.where(ok, ss_tot, 1.0), np.where(ss_res == 0, 1.0, 0.0))
    return np.where(w >= 2, scores.mean(axis=1), np.nan)


def pearson(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pearson r per target averaged over targets; NaN where any target or prediction is constant."""
    y, p = _columns(y, p)
    w = counts.sum(axis=1)
    rs = np.empty((counts.shape[0], y.shape[1]))
    for j in range(y.shape[1]):
        dy, dp = _centred(y[:, j], counts, w), _centred(p[:, j], counts, w)
        sxy = np.sum(counts * dy * dp, axis=1)
        sxx, syy = np.sum(counts * dy * dy, axis=1), np.sum(counts * dp * dp, axis=1)
        flat = (_drawn_range(y[:, j], counts) == 0) | (_drawn_range(p[:, j], counts) == 0)
        denom = np.sqrt(np.where(flat, 1.0, sxx * syy))
        rs[:, j] = np.where(flat, np.nan, np.clip(sxy / denom, -1.0, 1.0))
    return rs.mean(axis=1)
