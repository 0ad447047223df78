"""Retrieval scores: hand-computed ranks, and one tie rule (expected value under random
tie-breaking) for both protocols, so a collapsed encoder scores exactly chance."""

from itertools import permutations
from math import comb
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ctbench.tasks.retrieval import (
    KS, RetrievalTask, cosine_matrix, expected_ap, expected_rank, instance_queries, label_queries, recall_at,
    tie_groups,
)


def test_instance_ranks_and_ap_hand_computed():
    # scans 0,1 belong to patient a; 2 to b; 3 to c. Embeddings put 0 near 2, then 1.
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.9, 0.1], [-1.0, 0.0]])
    groups, queries = instance_queries(cosine_matrix(emb), np.array(["a", "a", "b", "c"]))
    assert queries.tolist() == [0, 1]
    for g in groups:  # query 0: scan 2 first, then its twin 1; query 1: scan 2 (cos .62) beats 0 (.6)
        assert expected_rank(g) == 2
        assert recall_at(1, g) == 0 and recall_at(2, g) == 1
        assert expected_ap(g) == 0.5
    g = tie_groups(np.array([0.9, 0.8, 0.7, 0.1]), np.array([True, False, True, False]))
    assert expected_ap(g) == pytest.approx((1 + 2 / 3) / 2)


def _brute_force(scores: np.ndarray, relevant: np.ndarray, k: int) -> tuple[float, float]:
    """Recall@k and AP averaged over every order of the candidates that respects the scores."""
    recalls, aps = [], []
    for tiebreak in permutations(range(len(scores))):
        order = np.lexsort((np.array(tiebreak), -scores))
        hits = relevant[order]
        recalls.append(float(hits[:k].any()))
        ranks = np.flatnonzero(hits) + 1
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    return float(np.mean(recalls)), float(np.mean(aps))


def test_ties_within_a_case_count_as_their_expectation_under_random_order():
    rng = np.random.default_rng(0)
    for _ in range(12):
        scores = rng.integers(0, 3, size=6).astype(float)
        relevant = rng.random(6) < 0.4
        relevant[rng.integers(6)] = True
        g = tie_groups(scores, relevant)
        for k in (1, 2, 4):
            recall, ap = _brute_force(scores, relevant, k)
            assert recall_at(k, g) == pytest.approx(recall)
            assert expected_ap(g) == pytest.approx(ap)
    # the relevant candidate tied with two others at the top: 1/3 at k=1, certain at k=3
    g = tie_groups(np.array([0.5, 0.5, 0.5, 0.1]), np.array([False, True, False, False]))
    assert recall_at(1, g) == pytest.approx(1 / 3) and recall_at(2, g) == pytest.approx(2 / 3)
    assert recall_at(3, g) == 1 and expected_rank(g) == 2
    assert expected_ap(g) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_label_queries_perfect_and_random_embeddings():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 10 + [0] * 150)
    patients = np.array([f"p{i}" for i in range(160)])
    good = np.stack([labels, 1 - labels], axis=1) + rng.normal(0, 0.01, (160, 2))
    groups, q = label_queries(cosine_matrix(good), labels, patients, rng)
    assert len(groups) == 10 and all(g.size.sum() == 100 for g in groups)
    assert all(recall_at(1, g) == 1 for g in groups)
    # random embeddings: the positive's rank is uniform over 1..100, so Recall@10 ~ chance 0.1
    labels = np.array([1] * 400 + [0] * 400)
    patients = np.array([f"p{i}" for i in range(800)])
    groups, _ = label_queries(cosine_matrix(rng.normal(size=(800, 16))), labels, patients, rng)
    assert abs(np.mean([recall_at(10, g) for g in groups]) - 0.10) < 0.04
    assert abs(np.mean([expected_rank(g) for g in groups]) - 50.5) < 5


def _cohort() -> pd.DataFrame:
    """30 patients: 8 with two scans, 2 with three, the rest one; every third patient's scans
    hold the finding."""
    scans = [2] * 8 + [3] * 2 + [1] * 20
    patients = np.repeat([f"p{i}" for i in range(len(scans))], scans)
    finding = np.repeat([int(i % 3 == 0) for i in range(len(scans))], scans)
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(len(patients))], "patient_id": patients,
                         "finding": finding})


def _evaluate(rows: pd.DataFrame, emb: np.ndarray) -> tuple[dict, pd.DataFrame, dict]:
    task = RetrievalTask.__new__(RetrievalTask)
    task.spec = SimpleNamespace(targets=("finding",), main_metric="label_recall@5")
    return task.evaluate(rows, emb, seed=0, n_boot=20)


def _chance(rows: pd.DataFrame) -> dict[str, float]:
    """A collapsed encoder's expected scores, by hand: per label query k / (negatives + 1); per
    instance query with m relevant among N: P(a relevant in the top k) = 1 - C(N-m, k)/C(N, k),
    E[AP] = (m-1)/(N-1) + (N-m) H_N / (N (N-1))."""
    n_neg = int((rows["finding"] == 0).sum())
    out = {f"label_recall@{k}": k / (min(n_neg, 99) + 1) for k in KS}
    N = len(rows) - 1
    m = rows.groupby("patient_id")["patient_id"].transform("size").to_numpy() - 1
    m = m[m > 0]
    for k in KS:
        out[f"instance_recall@{k}"] = float(np.mean([1 - comb(N - x, k) / comb(N, k) for x in m]))
    harmonic = sum(1 / r for r in range(1, N + 1))
    out["instance_map"] = float(np.mean([(x - 1) / (N - 1) + (N - x) * harmonic / (N * (N - 1)) for x in m]))
    return out


@pytest.mark.parametrize("value", [0.0, 1.0, -3.5])
def test_a_constant_encoder_scores_exactly_chance_on_both_protocols(value):
    rows = _cohort()
    emb = np.full((len(rows), 8), value)
    estimates, frame, info = _evaluate(rows, emb)
    expected = _chance(rows)
    assert set(expected) <= set(estimates)
    for name, want in expected.items():
        assert np.isfinite(estimates[name].value)
        assert estimates[name].value == pytest.approx(want, abs=1e-12), name
        assert info["chance"][name] == pytest.approx(want, abs=1e-12), name
    inst = frame[frame["protocol"] == "instance"]
    np.testing.assert_allclose(inst["recall@1"], inst["chance@1"])
    assert np.isfinite(frame["rank"]).all()


def test_a_perfect_encoder_scores_one_on_both_protocols():
    rows = _cohort()
    patient = pd.factorize(rows["patient_id"])[0]
    emb = np.concatenate([np.eye(patient.max() + 1)[patient], rows[["finding"]].to_numpy()], axis=1)
    estimates, frame, info = _evaluate(rows, emb)
    for name in [f"label_recall@{k}" for k in KS] + [f"instance_recall@{k}" for k in KS] + ["instance_map"]:
        assert estimates[name].value == 1.0, name
    assert (frame["rank"] == 1).all()
    assert info["chance"]["instance_recall@1"] < 0.2
