"""Ranking metrics against hand computations and a from-scratch implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.evaluate import ranking_metrics


def _holdout(rows: dict[int, list[int]], n_users: int, n_items: int) -> sp.csr_matrix:
    pairs = [(u, i) for u, items in rows.items() for i in items]
    u, i = zip(*pairs, strict=True)
    return sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(n_users, n_items))


def test_hand_computed_values():
    recommended = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [0, 1, 2, 3]])
    holdout = _holdout({0: [2, 9], 1: [8]}, 3, 10)  # user 2 has no held-out items
    popularity = np.arange(10, dtype=np.float64)
    m = ranking_metrics(recommended, holdout, [2, 4], popularity)
    assert m["users"] == 2
    # user 0: hit at rank 2; user 1: hit at rank 4
    assert m["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@4"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["hit_rate@4"] == 1.0 and m["hit_rate@2"] == 0.5
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    ndcg1 = (1 / math.log2(5)) / 1
    assert m["ndcg@4"] == pytest.approx((ndcg0 + ndcg1) / 2, rel=1e-5)
    assert m["map@4"] == pytest.approx(((1 / 2) / 2 + (1 / 4) / 1) / 2)
    assert m["coverage@2"] == pytest.approx(4 / 10)  # items 1, 2, 5, 6 for evaluated users
    assert m["popularity@2"] == pytest.approx(np.mean([1, 2, 5, 6]))


def _from_scratch(recommended, holdout, k):
    recalls, ndcgs = [], []
    for user in range(holdout.shape[0]):
        truth = set(holdout[user].indices)
        if not truth:
            continue
        top = [i for i in recommended[user, :k] if i >= 0]
        hits = [1 if i in truth else 0 for i in top]
        recalls.append(sum(hits) / len(truth))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(truth))))
        ndcgs.append(dcg / idcg)
    return np.mean(recalls), np.mean(ndcgs)


def test_matches_a_from_scratch_loop_on_random_data():
    rng = np.random.default_rng(0)
    n_users, n_items, n = 200, 60, 15
    recommended = np.array([rng.choice(n_items, n, replace=False) for _ in range(n_users)])
    recommended[::7, -3:] = -1  # some short lists
    dense = rng.random((n_users, n_items)) < 0.05
    holdout = sp.csr_matrix(dense.astype(np.float32))
    m = ranking_metrics(recommended, holdout, [5, 15], np.ones(n_items))
    for k in (5, 15):
        recall, ndcg = _from_scratch(recommended, holdout, k)
        assert m[f"recall@{k}"] == pytest.approx(recall, abs=1e-6)
        assert m[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-6)


def test_no_held_out_users_gives_nothing():
    assert ranking_metrics(np.zeros((2, 3), np.int64), sp.csr_matrix((2, 5)), [3], np.ones(5)) == {}


def test_ann_recall_counts_ties_with_the_kth_exact_score():
    from recsys.evaluate import recall_at_k

    exact_ids = np.array([[1, 2, 3]])
    exact_scores = np.array([[0.9, 0.5, 0.5]], dtype=np.float32)
    approx_ids = np.array([[1, 2, 7]])  # 7 ties with 3 at the k-th score
    tied = np.array([[0.9, 0.5, 0.5]], dtype=np.float32)
    worse = np.array([[0.9, 0.5, 0.4]], dtype=np.float32)
    assert recall_at_k(approx_ids, exact_ids, 3) == pytest.approx(2 / 3)
    assert recall_at_k(approx_ids, exact_ids, 3, tied, exact_scores) == 1.0
    assert recall_at_k(approx_ids, exact_ids, 3, worse, exact_scores) == pytest.approx(2 / 3)
