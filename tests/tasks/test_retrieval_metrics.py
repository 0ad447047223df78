import numpy as np
import pytest

from ctbench.tasks.retrieval import average_precision, cosine_matrix, instance_ranks, label_ranks


def test_instance_ranks_and_ap_hand_computed():
    # scans 0,1 belong to patient a; 2 to b; 3 to c. Embeddings put 0 near 2, then 1.
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.9, 0.1], [-1.0, 0.0]])
    ranks, queries = instance_ranks(cosine_matrix(emb), np.array(["a", "a", "b", "c"]))
    assert queries.tolist() == [0, 1]
    assert ranks[0].tolist() == [2]  # for query 0: scan 2 first, then its twin 1
    assert ranks[1].tolist() == [2]  # for query 1: scan 2 (cos .62) beats scan 0 (cos .6)
    assert average_precision(np.array([2])) == 0.5
    assert average_precision(np.array([1, 3])) == pytest.approx((1 + 2 / 3) / 2)


def test_label_ranks_perfect_and_anti_embeddings():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 10 + [0] * 150)
    patients = np.array([f"p{i}" for i in range(160)])
    good = np.stack([labels, 1 - labels], axis=1) + rng.normal(0, 0.01, (160, 2))
    r, q, sizes = label_ranks(cosine_matrix(good), labels, patients, rng)
    assert len(r) == 10 and (sizes == 100).all() and (r == 1).all()
    # random embeddings: the positive's rank is uniform over 1..100, so Recall@10 ~ chance 0.1
    labels = np.array([1] * 400 + [0] * 400)
    patients = np.array([f"p{i}" for i in range(800)])
    r, _, _ = label_ranks(cosine_matrix(rng.normal(size=(800, 16))), labels, patients, rng)
    assert abs((r <= 10).mean() - 0.10) < 0.04
    assert abs(r.mean() - 50.5) < 5
