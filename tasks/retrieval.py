"""Retrieval on L2-normalised embeddings with cosine similarity; nothing is trained.

Two protocols, both on every case of the dataset:
- label retrieval (the VoxelFM paper's): for each label and each query holding it, one positive
  (another patient's case with the label) is hidden among 99 negatives (cases without it);
  Recall@k is how often the positive ranks in the top k (chance = k/100).
- instance retrieval: each scan of a patient with repeat scans queries all other scans;
  Recall@k (a same-patient scan in the top k) and mean average precision.
CIs come from resampling the queries' patients.

Ties, one rule for both protocols: every score is the expected value over a uniformly random
order of candidates with equal similarity (similarities are rounded to ``TIE_DECIMALS`` decimals
first, so floating-point noise cannot split a tie). For a query whose first tie group holding a
relevant candidate has ``a`` candidates above it, ``s`` members and ``r`` relevant ones,
Recall@k = P(a relevant one in the top k) = 1 - C(s - r, j) / C(s, j) with ``j = k - a`` clipped
to [0, s]; AP is its exact expectation (:func:`expected_ap`). A collapsed encoder (all
similarities equal, including all-zero embeddings, whose cosines are 0) thus scores exactly
chance: k/(n_negatives + 1) for labels, 1 - C(N - m, k) / C(N, k) for a query with m relevant
among N candidates. Chance per query is in the predictions (``chance@k``), its mean over the
queries (a collapsed encoder's expected score) in the protocol's ``chance``.
"""

from __future__ import annotations

from math import comb
from typing import NamedTuple

import numpy as np
import pandas as pd

from ctbench import target_checks
from ctbench.bootstrap import MetricFn, bootstrap_metrics
from ctbench.registry import register_task
from ctbench.task import EvalTask, Metric

from . import retrieval_scores as scores

KS = (1, 5, 10)
N_NEGATIVES = 99
TIE_DECIMALS = 10


class TieGroups(NamedTuple):
    """One query's candidates grouped by equal similarity, best group first: candidates above
    each group, its size and its relevant members."""

    above: np.ndarray
    size: np.ndarray
    relevant: np.ndarray


def cosine_matrix(emb: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``emb``, rounded to ``TIE_DECIMALS`` decimals
    (a zero row has similarity 0 to everything)."""
    e = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    return np.round(e @ e.T, TIE_DECIMALS)


def tie_groups(scores: np.ndarray, relevant: np.ndarray) -> TieGroups:
    """Group candidates (``scores`` and a boolean ``relevant`` mask) by equal score."""
    _, inverse = np.unique(-np.asarray(scores, dtype=np.float64), return_inverse=True)
    size = np.bincount(inverse.ravel())
    rel = np.bincount(inverse.ravel(), weights=np.asarray(relevant, dtype=np.float64), minlength=len(size))
    return TieGroups(np.cumsum(size) - size, size, rel.astype(int))


def recall_at(k: int, g: TieGroups) -> float:
    """Expected Recall@k (a relevant candidate in the top k) under random tie-breaking."""
    hit = np.flatnonzero(g.relevant)
    if not len(hit):
        return 0.0
    a, s, r = int(g.above[hit[0]]), int(g.size[hit[0]]), int(g.relevant[hit[0]])
    j = min(max(k - a, 0), s)
    return 1.0 - comb(s - r, j) / comb(s, j)


def expected_ap(g: TieGroups) -> float:
    """Expected average precision under random tie-breaking.

    A relevant candidate of a group (``a`` above, of which ``R`` relevant; ``s`` members, ``r``
    relevant) lands at position p = 1..s of its group with probability 1/s, with on average
    (p - 1)(r - 1)/(s - 1) relevant group members before it: its expected precision is the mean
    over p of (R + 1 + (p - 1)(r - 1)/(s - 1)) / (a + p). Without ties this is the usual AP.
    """
    m = int(g.relevant.sum())
    if not m:
        return float("nan")
    rel_above = np.cumsum(g.relevant) - g.relevant
    total = 0.0
    for i in np.flatnonzero(g.relevant):
        a, s, r = int(g.above[i]), int(g.size[i]), int(g.relevant[i])
        p = np.arange(1, s + 1)
        before = (p - 1) * (r - 1) / (s - 1) if s > 1 else 0.0
        total += r * float(np.mean((rel_above[i] + 1 + before) / (a + p)))
    return total / m


def label_queries(sim: np.ndarray, labels: np.ndarray, patients: np.ndarray, rng: np.random.Generator,
                  n_negatives: int = N_NEGATIVES) -> tuple[list[TieGroups], np.ndarray]:
    """Per query holding the label: the tie groups of one sampled positive (another patient's)
    among up to ``n_negatives`` sampled negatives. Returns (groups per query, query indices)."""
    out, queries = [], []
    pos_all, neg_all = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    for q in pos_all:
        pos = pos_all[patients[pos_all] != patients[q]]
        if len(pos) == 0 or len(neg_all) == 0:
            continue
        p = rng.choice(pos)
        neg = rng.choice(neg_all, size=min(n_negatives, len(neg_all)), replace=False)
        out.append(tie_groups(sim[q, np.r_[p, neg]], np.r_[True, np.zeros(len(neg), bool)]))
        queries.append(q)
    return out, np.array(queries, dtype=int)


def instance_queries(sim: np.ndarray, patients: np.ndarray) -> tuple[list[TieGroups], np.ndarray]:
    """Per scan whose patient has another scan: the tie groups of all other scans, that
    patient's being relevant. Returns (groups per query, query indices)."""
    out, queries = [], []
    idx = np.arange(len(patients))
    for q in idx:
        rel = patients == patients[q]
        if rel.sum() < 2:
            continue
        others = idx != q
        out.append(tie_groups(sim[q, others], rel[others]))
        queries.append(q)
    return out, np.array(queries, dtype=int)


def expected_rank(g: TieGroups) -> float:
    """Expected rank (1 = best) of the first relevant candidate under random tie-breaking."""
    i = np.flatnonzero(g.relevant)[0]
    return float(g.above[i] + (g.size[i] + 1) / (g.relevant[i] + 1))


def chance(g: TieGroups) -> TieGroups:
    """The same candidates all tied: what a collapsed (constant) encoder gets."""
    return TieGroups(np.array([0]), np.array([g.size.sum()]), np.array([g.relevant.sum()]))


def score_table(groups: list[TieGroups], with_ap: bool) -> dict[str, np.ndarray]:
    """Per-query expected Recall@k (and AP), their chance values and the expected rank."""
    cols = {f"recall@{k}": np.array([recall_at(k, g) for g in groups]) for k in KS}
    cols |= {f"chance@{k}": np.array([recall_at(k, chance(g)) for g in groups]) for k in KS}
    if with_ap:
        cols["ap"] = np.array([expected_ap(g) for g in groups])
        cols["chance_ap"] = np.array([expected_ap(chance(g)) for g in groups])
    cols["rank"] = np.array([expected_rank(g) for g in groups])
    return cols


def _mean_value(_: np.ndarray, values: np.ndarray) -> float:
    """The mean of per-query values (ValueError without queries)."""
    if not len(values):
        raise ValueError("no query to average over")
    return float(np.mean(values))


def _mean_of(values: np.ndarray) -> MetricFn:
    """Metric over resampled query indices: the mean of ``values`` on them."""
    return lambda idx, _: float(np.mean(values[np.asarray(idx, dtype=int)])) if len(idx) else float("nan")


@register_task("retrieval")
class RetrievalTask(EvalTask):
    """Label and same-patient instance retrieval by cosine similarity (no training)."""

    category = "retrieval"

    def label_columns(self) -> list[str]:
        return [c for c in self.spec.targets if c != "patient_id"]

    def metric_table(self) -> dict[str, Metric]:
        """Means of per-query values (the ``recall@k`` / ``ap`` columns of the predictions)."""
        names = [f"{p}_recall@{k}" for p in ("label", "instance") for k in KS] + ["instance_map"]
        return {n: Metric(n, _mean_value, "maximize", "per-query values") for n in names}

    def validate_targets(self, rows: pd.DataFrame) -> None:
        """Label columns must be 0 or 1 (a case holds the label or not); ``patient_id`` (the
        instance protocol's target) is an id, not checked as a value."""
        for col in self.label_columns():
            target_checks.binary_in(self.dataset, rows, col, "retrieval labels")

    def evaluate(self, rows, embeddings, *, seed, n_boot):
        sim = cosine_matrix(np.asarray(embeddings, dtype=np.float64))
        patients = rows["patient_id"].to_numpy().astype(str)
        case_ids = rows["case_id"].to_numpy()
        rng = np.random.default_rng(seed)
        estimates, frames, info = {}, [], {"queries": {}, "candidates": {}, "chance": {}}

        label_g, label_q, label_names = [], [], []
        for col in self.label_columns():
            g, q = label_queries(sim, rows[col].to_numpy(), patients, rng)
            label_g += g
            label_q.append(q)
            label_names += [col] * len(g)
            info["candidates"][col] = int(min(x.size.sum() for x in g)) if g else 0
        protocols = [("label", label_g, np.concatenate(label_q) if label_q else np.array([], int), label_names)]
        inst_g, inst_q = instance_queries(sim, patients)
        protocols.append(("instance", inst_g, inst_q, [""] * len(inst_g)))

        for name, groups, q, labels in protocols:
            if not groups:
                continue
            cols = score_table(groups, with_ap=name == "instance")
            metrics = {f"{name}_recall@{k}": _mean_of(cols[f"recall@{k}"]) for k in KS}
            info["chance"] |= {f"{name}_recall@{k}": float(np.mean(cols[f"chance@{k}"])) for k in KS}
            if "ap" in cols:
                metrics[f"{name}_map"] = _mean_of(cols["ap"])
                info["chance"][f"{name}_map"] = float(np.mean(cols["chance_ap"]))
            idx = np.arange(len(groups))
            estimates.update(bootstrap_metrics(metrics, idx, idx, patients[q], n_boot=n_boot, seed=seed))
            info["queries"][name] = int(len(groups))
            frames.append(pd.DataFrame({"protocol": name, "label": labels, "case_id": case_ids[q],
                                        "patient_id": patients[q], **cols}))
        return estimates, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), info

    def per_case_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The per-query predictions summed per case for the main metric's protocol
        (:func:`ctbench.tasks.retrieval_scores.per_case`): the rows the leaderboards align."""
        return scores.per_case(frame, scores.protocol_of(self.main_metric))

    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Queries per case and per-case sums of the protocol's per-query values."""
        return scores.read_layout(frame, scores.protocol_of(self.main_metric))

    def rescoring_metrics(self) -> dict[str, MetricFn]:
        """The main metric's protocol's metrics on the per-case layout (ratios of sums)."""
        return scores.layout_metrics(scores.protocol_of(self.main_metric))
