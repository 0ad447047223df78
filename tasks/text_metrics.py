"""Report-generation metrics: BLEU-4, ROUGE-L and clinical finding precision/recall/F1.

Every metric is ``fn(references, generated) -> float`` on 1-D sequences of strings, as the
engine's bootstrap calls them on resampled subsets; undefined values raise ``ValueError`` (the
bootstrap records them as NaN).

- BLEU-4: corpus-level BLEU (uniform 1-4-gram weights, brevity penalty, no smoothing) from
  ``nltk``, on the same lower-cased alphanumeric tokens ROUGE uses.
- ROUGE-L: ``rouge-score``'s LCS F-measure (no stemming) per report pair, averaged over reports.
- Finding F1: the rule-based labels of :mod:`ctbench.tasks.findings` read from both reports
  (uncertain mentions count as positive). *Micro* F1 pools true/false positives and false
  negatives over all cases and labels; *macro* F1 averages per-label F1 over the labels positive
  in at least one reference or generated report of the set (labels nobody mentions are
  undefined, not perfect). ``labels`` picks the scored labels (default: all 20).
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Sequence

import numpy as np
from nltk.translate.bleu_score import corpus_bleu
from rouge_score import rouge_scorer, tokenizers

from .findings import LABELS, finding_vector

_TOKENIZER = tokenizers.DefaultTokenizer(use_stemmer=False)
_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _pairs(refs: Sequence[str], hyps: Sequence[str]) -> tuple[list[str], list[str]]:
    refs = [str(r) for r in np.asarray(refs, dtype=object).reshape(-1)]
    hyps = [str(h) for h in np.asarray(hyps, dtype=object).reshape(-1)]
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} generated reports")
    if not refs:
        raise ValueError("no reports to score")
    return refs, hyps


@lru_cache(maxsize=65536)
def words(text: str) -> tuple[str, ...]:
    """Lower-cased alphanumeric tokens (rouge-score's default tokenizer, no stemming)."""
    return tuple(_TOKENIZER.tokenize(text))


def bleu4(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus BLEU-4 in [0, 1] (one reference per report)."""
    refs, hyps = _pairs(refs, hyps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns when a higher-order n-gram never matches
        return float(corpus_bleu([[list(words(r))] for r in refs], [list(words(h)) for h in hyps]))


@lru_cache(maxsize=65536)
def _rouge_l_pair(ref: str, hyp: str) -> float:
    return float(_ROUGE.score(ref, hyp)["rougeL"].fmeasure)


def rouge_l(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure over report pairs, in [0, 1]."""
    refs, hyps = _pairs(refs, hyps)
    return float(np.mean([_rouge_l_pair(r, h) for r, h in zip(refs, hyps)]))


def finding_matrix(texts: Sequence[str], labels: tuple[str, ...] = LABELS) -> np.ndarray:
    """``(n, len(labels))`` binary findings read from each report."""
    return np.stack([finding_vector(t, labels) for t in texts]).reshape(len(texts), len(labels))


def finding_counts(
    refs: Sequence[str], hyps: Sequence[str], labels: tuple[str, ...] = LABELS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label true positives, false positives and false negatives (generated vs reference)."""
    refs, hyps = _pairs(refs, hyps)
    y, p = finding_matrix(refs, labels).astype(bool), finding_matrix(hyps, labels).astype(bool)
    return (y & p).sum(0), (~y & p).sum(0), (y & ~p).sum(0)


def _f1(tp, fp, fn):
    return 2 * tp / (2 * tp + fp + fn)


def finding_f1_micro(
    refs: Sequence[str], hyps: Sequence[str], labels: tuple[str, ...] = LABELS
) -> float:
    """F1 of all (case, label) decisions pooled; undefined when nothing is positive anywhere."""
    tp, fp, fn = (int(v.sum()) for v in finding_counts(refs, hyps, labels))
    if tp + fp + fn == 0:
        raise ValueError("finding F1 is undefined: no finding in references or generated reports")
    return float(_f1(tp, fp, fn))


def finding_f1_macro(
    refs: Sequence[str], hyps: Sequence[str], labels: tuple[str, ...] = LABELS
) -> float:
    """Mean per-label F1 over labels positive in some reference or generated report."""
    tp, fp, fn = finding_counts(refs, hyps, labels)
    seen = (tp + fp + fn) > 0
    if not seen.any():
        raise ValueError("finding F1 is undefined: no finding in references or generated reports")
    return float(np.mean(_f1(tp[seen], fp[seen], fn[seen])))


def finding_precision(
    refs: Sequence[str], hyps: Sequence[str], labels: tuple[str, ...] = LABELS
) -> float:
    """Micro precision: share of generated findings that the reference states."""
    tp, fp, _ = (int(v.sum()) for v in finding_counts(refs, hyps, labels))
    if tp + fp == 0:
        raise ValueError("finding precision is undefined: the generated reports state no finding")
    return tp / (tp + fp)


def finding_recall(
    refs: Sequence[str], hyps: Sequence[str], labels: tuple[str, ...] = LABELS
) -> float:
    """Micro recall: share of reference findings that the generated report states."""
    tp, _, fn = (int(v.sum()) for v in finding_counts(refs, hyps, labels))
    if tp + fn == 0:
        raise ValueError("finding recall is undefined: the references state no finding")
    return tp / (tp + fn)


def per_label_scores(
    refs: Sequence[str], hyps: Sequence[str], labels: tuple[str, ...] = LABELS
) -> list[dict]:
    """One row per label: support, tp/fp/fn, precision, recall, F1 (None where undefined)."""
    tp, fp, fn = finding_counts(refs, hyps, labels)
    rows = []
    for j, label in enumerate(labels):
        t, f, n = int(tp[j]), int(fp[j]), int(fn[j])
        rows.append({
            "label": label, "support": t + n, "tp": t, "fp": f, "fn": n,
            "precision": t / (t + f) if t + f else None,
            "recall": t / (t + n) if t + n else None,
            "f1": _f1(t, f, n) if t + f + n else None,
        })
    return rows
