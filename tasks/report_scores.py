"""Report-generation metrics re-scored from per-case values (the leaderboards' paired bootstrap).

Reports are not read again: predictions.csv holds, per case, the findings each report states
(``y_findings`` / ``p_findings``: label names joined by ``"; "``), its ROUGE-L (``rouge_l``)
and BLEU-4's sufficient statistics (``bleu_match_<n>`` / ``bleu_total_<n>``: clipped and total
n-gram counts of the generated report for n = 1..4, ``bleu_hyp_words`` / ``bleu_ref_words``:
both lengths), written by :func:`per_case_columns`. Every metric of
:class:`~ctbench.tasks.report_generation.ReportGenerationTask` is a function of these on any
subset of cases: finding scores pool (case, label) decisions, ROUGE-L is a mean over cases and
corpus BLEU-4 sums its counts over cases (as ``nltk``'s ``corpus_bleu`` does).

The scoring layout: ``y`` = the references' finding vectors ``(n, L)`` over all
:data:`~ctbench.tasks.findings.LABELS` (labels a dataset does not score are 0 in both, which no
finding score counts); ``pred`` = ``[generated findings (L) | rouge_l | BLEU statistics (10)]``.
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import numpy as np
import pandas as pd
from nltk.translate.bleu_score import modified_precision

from ctbench.bootstrap import MetricFn
from ctbench.errors import CTBenchError

from . import text_metrics as tm
from .findings import LABELS

ORDERS = (1, 2, 3, 4)
SEP = "; "
BLEU_COLUMNS = ([f"bleu_match_{n}" for n in ORDERS] + [f"bleu_total_{n}" for n in ORDERS]
                + ["bleu_hyp_words", "bleu_ref_words"])
FINDINGS = len(LABELS)
ROUGE = FINDINGS  # column of ``pred`` holding ROUGE-L; BLEU statistics follow it


def bleu_statistics(ref: str, hyp: str) -> np.ndarray:
    """One report pair's BLEU-4 counts, in :data:`BLEU_COLUMNS` order (nltk's own counting, on
    the words :func:`ctbench.tasks.text_metrics.bleu4` scores)."""
    r, h = list(tm.words(str(ref))), list(tm.words(str(hyp)))
    fractions = [modified_precision([r], h, n) for n in ORDERS]
    return np.array([f.numerator for f in fractions] + [f.denominator for f in fractions] + [len(h), len(r)],
                    dtype=np.float64)


def bleu_from_statistics(stats: np.ndarray) -> float:
    """Corpus BLEU-4 from per-case statistics, as ``nltk``'s ``corpus_bleu`` (no smoothing)."""
    if not len(stats):
        raise ValueError("no reports to score")
    total = stats.sum(axis=0)
    match, count, hyp_len, ref_len = total[:4], total[4:8], total[8], total[9]
    if match[0] == 0:
        return 0.0
    bp = 1.0 if hyp_len > ref_len else 0.0 if hyp_len == 0 else math.exp(1 - ref_len / hyp_len)
    precisions = [m / c if m else sys.float_info.min for m, c in zip(match, count)]
    return float(bp * math.exp(math.fsum(0.25 * math.log(p) for p in precisions)))


def per_case_columns(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, np.ndarray]:
    """``rouge_l`` and the BLEU statistics of every report pair, as predictions.csv columns."""
    stats = np.array([bleu_statistics(r, h) for r, h in zip(refs, hyps)]).reshape(len(refs), len(BLEU_COLUMNS))
    cols = {"rouge_l": np.array([tm.rouge_l([r], [h]) for r, h in zip(refs, hyps)], dtype=np.float64)}
    return cols | {name: stats[:, j] for j, name in enumerate(BLEU_COLUMNS)}


def _vectors(names: pd.Series) -> np.ndarray:
    """``(n, L)`` 0/1 finding vectors from ``"; "``-joined label names (empty: none)."""
    index = {label: j for j, label in enumerate(LABELS)}
    out = np.zeros((len(names), FINDINGS))
    for i, text in enumerate(names.fillna("").astype(str)):
        for label in filter(None, text.split(SEP)):
            if label not in index:
                raise CTBenchError(f"predictions name an unknown finding {label!r}; re-run the result")
            out[i, index[label]] = 1.0
    return out


def read_layout(frame: pd.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(y, pred)`` in the scoring layout from a predictions frame (see the module docstring)."""
    cols = ["y_findings", "p_findings", "rouge_l", *BLEU_COLUMNS]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise CTBenchError(f"predictions lack column(s) {', '.join(missing)} for task {where!r}; "
                           f"re-run the result with this ctbench version")
    text = frame[["rouge_l", *BLEU_COLUMNS]].to_numpy(dtype=np.float64)
    return _vectors(frame["y_findings"]), np.hstack([_vectors(frame["p_findings"]), text])


def _counts(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label true positives, false positives and false negatives."""
    t, p = y > 0, pred[:, :FINDINGS] > 0
    return (t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)


def finding_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Micro F1 over (case, label) decisions (:func:`ctbench.tasks.text_metrics.finding_f1_micro`)."""
    tp, fp, fn = (int(v.sum()) for v in _counts(y, pred))
    if tp + fp + fn == 0:
        raise ValueError("finding F1 is undefined: no finding in references or generated reports")
    return 2 * tp / (2 * tp + fp + fn)


def finding_f1_macro(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-label F1 over the labels positive in some reference or generated report."""
    tp, fp, fn = _counts(y, pred)
    seen = (tp + fp + fn) > 0
    if not seen.any():
        raise ValueError("finding F1 is undefined: no finding in references or generated reports")
    return float(np.mean(2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])))


def finding_precision(y: np.ndarray, pred: np.ndarray) -> float:
    tp, fp, _ = (int(v.sum()) for v in _counts(y, pred))
    if tp + fp == 0:
        raise ValueError("finding precision is undefined: the generated reports state no finding")
    return tp / (tp + fp)


def finding_recall(y: np.ndarray, pred: np.ndarray) -> float:
    tp, _, fn = (int(v.sum()) for v in _counts(y, pred))
    if tp + fn == 0:
        raise ValueError("finding recall is undefined: the references state no finding")
    return tp / (tp + fn)


def rouge_l(y: np.ndarray, pred: np.ndarray) -> float:
    if not len(pred):
        raise ValueError("no reports to score")
    return float(np.mean(pred[:, ROUGE]))


def bleu4(y: np.ndarray, pred: np.ndarray) -> float:
    return bleu_from_statistics(pred[:, ROUGE + 1:])


def layout_metrics() -> dict[str, MetricFn]:
    """The task's metrics, by name, on the scoring layout."""
    return {"finding_f1": finding_f1, "finding_f1_macro": finding_f1_macro,
            "finding_precision": finding_precision, "finding_recall": finding_recall,
            "bleu4": bleu4, "rouge_l": rouge_l}
