"""Retrieval on L2-normalised embeddings with cosine similarity; nothing is trained.

Two protocols, both on every case of the dataset:
- label retrieval (the VoxelFM paper's): for each label and each query holding it, one positive
  (another patient's case with the label) is hidden among 99 negatives (cases without it);
  Recall@k is how often the positive ranks in the top k (chance = k/100).
- instance retrieval: each scan of a patient with repeat scans queries all other scans;
  Recall@k (a same-patient scan in the top k) and mean average precision.
CIs come from resampling the queries' patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctbench.bootstrap import bootstrap_metrics
from ctbench.registry import register_task
from ctbench.task import EvalTask

KS = (1, 5, 10)
N_NEGATIVES = 99


def cosine_matrix(emb: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``emb``."""
    e = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    return e @ e.T


def label_ranks(sim: np.ndarray, labels: np.ndarray, patients: np.ndarray, rng: np.random.Generator,
                n_negatives: int = N_NEGATIVES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank (1 = best) of one sampled positive among up to ``n_negatives`` negatives, per query.

    Returns (ranks, query indices, candidate counts). Ties count against the positive.
    """
    ranks, queries, sizes = [], [], []
    pos_all, neg_all = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    for q in pos_all:
        pos = pos_all[patients[pos_all] != patients[q]]
        if len(pos) == 0 or len(neg_all) == 0:
            continue
        p = rng.choice(pos)
        neg = rng.choice(neg_all, size=min(n_negatives, len(neg_all)), replace=False)
        ranks.append(1 + int((sim[q, neg] >= sim[q, p]).sum()))
        queries.append(q)
        sizes.append(len(neg) + 1)
    return np.array(ranks, dtype=int), np.array(queries, dtype=int), np.array(sizes, dtype=int)


def instance_ranks(sim: np.ndarray, patients: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """For each scan whose patient has another scan: the ranks (1 = best) of that patient's
    other scans among all other scans. Returns (ranks per query, query indices)."""
    out, queries = [], []
    for q in range(len(patients)):
        rel = (patients == patients[q]) & (np.arange(len(patients)) != q)
        if not rel.any():
            continue
        s = sim[q].copy()
        s[q] = -np.inf
        order = np.argsort(-s, kind="stable")
        pos = np.empty_like(order)
        pos[order] = np.arange(1, len(order) + 1)
        out.append(np.sort(pos[rel]))
        queries.append(q)
    return out, np.array(queries, dtype=int)


def average_precision(ranks: np.ndarray) -> float:
    """AP of one query from the sorted ranks of its relevant items."""
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def _mean_at(k: int):
    return lambda r, _: float(np.mean(r <= k)) if len(r) else float("nan")


@register_task("retrieval")
class RetrievalTask(EvalTask):
    """Label and same-patient instance retrieval by cosine similarity (no training)."""

    category = "retrieval"

    def label_columns(self) -> list[str]:
        return [c for c in self.spec.targets if c != "patient_id"]

    def evaluate(self, rows, embeddings, *, seed, n_boot):
        sim = cosine_matrix(np.asarray(embeddings, dtype=np.float64))
        patients = rows["patient_id"].to_numpy().astype(str)
        case_ids = rows["case_id"].to_numpy()
        rng = np.random.default_rng(seed)
        estimates, frames, info = {}, [], {"queries": {}, "candidates": {}}

        label_r, label_q, label_names = [], [], []
        for col in self.label_columns():
            r, q, sizes = label_ranks(sim, rows[col].to_numpy(), patients, rng)
            label_r.append(r)
            label_q.append(q)
            label_names += [col] * len(r)
            info["candidates"][col] = int(sizes.min()) if len(sizes) else 0
        if label_r and sum(map(len, label_r)):
            r, q = np.concatenate(label_r), np.concatenate(label_q)
            metrics = {f"label_recall@{k}": _mean_at(k) for k in KS}
            estimates.update(bootstrap_metrics(metrics, r, r, patients[q], n_boot=n_boot, seed=seed))
            info["queries"]["label"] = int(len(r))
            info["chance"] = {f"label_recall@{k}": k / (min(info["candidates"].values()) or 1) for k in KS}
            frames.append(pd.DataFrame({"protocol": "label", "label": label_names, "case_id": case_ids[q],
                                        "patient_id": patients[q], "rank": r}))

        inst, q = instance_ranks(sim, patients)
        if inst:
            first = np.array([r[0] for r in inst])
            ap = np.array([average_precision(r) for r in inst])
            metrics = {f"instance_recall@{k}": _mean_at(k) for k in KS}
            metrics["instance_map"] = lambda a, _: float(np.mean(a)) if len(a) else float("nan")
            est = bootstrap_metrics({k: v for k, v in metrics.items() if k != "instance_map"},
                                    first, first, patients[q], n_boot=n_boot, seed=seed)
            est.update(bootstrap_metrics({"instance_map": metrics["instance_map"]}, ap, ap, patients[q],
                                         n_boot=n_boot, seed=seed))
            estimates.update(est)
            info["queries"]["instance"] = int(len(q))
            frames.append(pd.DataFrame({"protocol": "instance", "label": "", "case_id": case_ids[q],
                                        "patient_id": patients[q], "rank": first, "ap": ap}))
        return estimates, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), info
