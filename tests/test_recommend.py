"""Batch recommendations and similar items: known answers, seen-item filtering, top-up,
never the item itself; exact search against brute force; recall against exact."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import QueryError
from recsys.evaluate import ann_recall, recall_at_k
from recsys.index import AnnoyIndex, ExactIndex, build_annoy_index, normalize_rows
from recsys.recommend import recommend_all, similar_all


def _checkerboard(n_items=40, dim=8, seed=0):
    """Items in two groups pointing two ways; users point at one group each."""
    rng = np.random.default_rng(seed)
    group = np.arange(n_items) % 2
    axes = np.eye(dim, dtype=np.float32)[[0, 1]]
    items = axes[group] + 0.05 * rng.normal(size=(n_items, dim)).astype(np.float32)
    items *= rng.uniform(0.5, 1.5, size=(n_items, 1)).astype(np.float32)
    users = np.repeat(axes, 10, axis=0) + 0.05 * rng.normal(size=(20, dim)).astype(np.float32)
    user_group = np.repeat([0, 1], 10)
    return items.astype(np.float32), users.astype(np.float32), group, user_group


def _seen(n_users, n_items, per_user, seed=1):
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for user in range(n_users):
        chosen = rng.choice(n_items, size=per_user, replace=False)
        rows += [user] * per_user
        cols += list(chosen)
    return sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items), dtype=np.float32
    )


def _backends(tmp_path, vectors, metric, n_trees=10):
    path = tmp_path / f"{metric}-{n_trees}.ann"
    build_annoy_index(vectors, metric, path, n_trees, 0)
    return {"annoy": AnnoyIndex(path), "exact": ExactIndex(vectors, metric)}


@pytest.mark.parametrize("backend", ["annoy", "exact"])
def test_checkerboard_recommends_own_group_unseen_and_sorted(tmp_path, backend):
    items, users, group, user_group = _checkerboard()
    seen = _seen(len(users), len(items), per_user=6)
    index = _backends(tmp_path, items, "dot")[backend]
    ids, scores = recommend_all(index, users, seen, items, n=10, search_k=10_000)
    assert (ids >= 0).all()
    for user in range(len(users)):
        assert (group[ids[user]] == user_group[user]).all()
        assert not set(ids[user]) & set(seen[user].indices)
        assert len(set(ids[user])) == 10
    assert (np.diff(scores, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("backend", ["annoy", "exact"])
def test_user_who_saw_almost_everything_gets_only_unseen_items(tmp_path, backend):
    items, users, _, _ = _checkerboard()
    seen = _seen(len(users), len(items), per_user=37)  # 3 unseen items each
    index = _backends(tmp_path, items, "dot")[backend]
    ids, scores = recommend_all(index, users, seen, items, n=10)
    for user in range(len(users)):
        unseen = set(range(len(items))) - set(seen[user].indices)
        assert set(ids[user, :3]) == unseen
        assert (ids[user, 3:] == -1).all()
        assert np.isfinite(scores[user, :3]).all() and (scores[user, :3] > -1e30).all()


class _ShortIndex(ExactIndex):
    """An index that, like an approximate index with a small search_k, returns only
    part of the asked-for results (-1 after them)."""

    def search(self, queries, k, exclude=None, search_k=-1):
        ids, scores = super().search(queries, k, exclude=exclude)
        ids[:, k // 2 :], scores[:, k // 2 :] = -1, -np.inf
        return ids, scores


def test_short_index_results_are_topped_up_from_exact():
    rng = np.random.default_rng(3)
    items = rng.normal(size=(500, 16)).astype(np.float32)
    users = rng.normal(size=(50, 16)).astype(np.float32)
    seen = _seen(50, 500, per_user=40)
    ids, scores = recommend_all(_ShortIndex(items, "dot"), users, seen, items, n=30)
    expected, _ = ExactIndex(items, "dot").search(users, 30, exclude=seen)
    np.testing.assert_array_equal(ids, expected)  # full lists, the exact best unseen items
    for user in range(50):
        assert not set(ids[user]) & set(seen[user].indices)
        np.testing.assert_allclose(scores[user], items[ids[user]] @ users[user], rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_similar_items_never_itself_and_same_group(tmp_path):
    items, _, group, _ = _checkerboard()
    for index in _backends(tmp_path, items, "angular").values():
        ids, _ = similar_all(index, items, n=5, search_k=10_000)
        assert (ids != np.arange(len(items))[:, None]).all()
        assert (group[ids] == group[:, None]).all()
    with pytest.raises(QueryError):
        similar_all(ExactIndex(items, "angular"), items, n=len(items))


def test_backends_agree_when_annoy_is_exhaustive(tmp_path):
    rng = np.random.default_rng(4)
    items = rng.normal(size=(120, 8)).astype(np.float32)
    users = rng.normal(size=(30, 8)).astype(np.float32)
    seen = _seen(30, 120, per_user=5)
    backends = _backends(tmp_path, items, "dot", n_trees=20)
    annoy_ids, _ = recommend_all(backends["annoy"], users, seen, items, 10, search_k=1_000_000)
    exact_ids, _ = recommend_all(backends["exact"], users, seen, items, 10)
    np.testing.assert_array_equal(annoy_ids, exact_ids)


@pytest.mark.parametrize("metric", ["dot", "angular"])
def test_exact_index_matches_brute_force(metric):
    rng = np.random.default_rng(5)
    items = rng.normal(size=(200, 12)).astype(np.float32)
    queries = rng.normal(size=(100, 12)).astype(np.float32)
    exclude = _seen(100, 200, per_user=7)
    full = queries @ items.T if metric == "dot" else normalize_rows(queries) @ normalize_rows(items).T
    full[exclude.nonzero()] = -np.inf
    expected = np.argsort(-full, axis=1, kind="stable")[:, :15]
    small_blocks = ExactIndex(items, metric, block_rows=32)
    for index in (ExactIndex(items, metric), small_blocks):
        ids, scores = index.search(queries, 15, exclude=exclude)
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), rtol=1e-5)


def test_exact_pads_when_fewer_items_remain():
    items = np.eye(4, dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[1, 1, 0, 0]], dtype=np.float32))
    ids, scores = ExactIndex(items, "dot").search(np.ones((1, 4), np.float32), 4, exclude=exclude)
    assert sorted(ids[0, :2]) == [2, 3] and (ids[0, 2:] == -1).all()
    assert np.isneginf(scores[0, 2:]).all()


def test_recall_at_k_known_values():
    approx = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    exact = np.array([[1, 2, 9, 8], [5, 6, 7, -1]])
    assert recall_at_k(approx, exact, 4) == pytest.approx((2 / 4 + 2 / 3) / 2)
    assert recall_at_k(approx[:, :2], exact[:, :2], 2) == 1.0
    assert np.isnan(recall_at_k(np.array([[1]]), np.array([[-1]]), 1))


@pytest.mark.parametrize("metric, search_k", [("angular", -1), ("dot", 20_000)])
def test_annoy_recall_against_exact_on_clustered_vectors(tmp_path, metric, search_k):
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(20, 32)).astype(np.float32) * 3
    vectors = (centres[rng.integers(0, 20, 2000)] + rng.normal(size=(2000, 32))).astype(np.float32)
    path = tmp_path / "x.ann"
    build_annoy_index(vectors, metric, path, 20, 0)
    index = AnnoyIndex(path)
    queries = vectors[rng.choice(2000, 200, replace=False)]
    figures = ann_recall(index, vectors, queries, 10, search_k=search_k)
    assert figures["recall_at_k"] >= 0.9
    assert figures["metric"] == metric and figures["queries"] == 200


def test_rerank_scores_are_exact_dot_and_recall_is_high(tmp_path):
    from recsys.index.rerank import RerankIndex

    rng = np.random.default_rng(8)
    items = rng.normal(size=(800, 16)).astype(np.float32) * rng.uniform(0.5, 2, (800, 1)).astype(np.float32)
    users = rng.normal(size=(60, 16)).astype(np.float32)
    seen = _seen(60, 800, per_user=10)
    angular = _backends(tmp_path, items, "angular", n_trees=20)["annoy"]
    rerank = RerankIndex(angular, items, candidates=400)
    ids, scores = rerank.search(users, 10, exclude=seen)
    assert rerank.metric == "dot" and rerank.backend == "annoy-rerank"
    for user in range(60):
        assert not set(ids[user]) & set(seen[user].indices)
        np.testing.assert_allclose(scores[user], items[ids[user]] @ users[user], rtol=1e-4, atol=1e-4)
    exact_ids, exact_scores = ExactIndex(items, "dot").search(users, 10, exclude=seen)
    assert recall_at_k(ids, exact_ids, 10, scores, exact_scores) >= 0.9
    with pytest.raises(ValueError, match="angular"):
        RerankIndex(_backends(tmp_path, items, "dot")["annoy"], items, 10)


@pytest.mark.parametrize("n", [5_000, 40_000])
def test_top_k_of_wide_rows_matches_a_full_sort(n):
    """Both top-k paths (selection over all columns; chunk-maximum prefilter for wide rows)
    give the exact top-k: excluded (-inf) entries never, rows with fewer than k left padded."""
    from recsys.index.exact import top_k_rows

    rng = np.random.default_rng(n)
    scores = rng.normal(size=(6, n)).astype(np.float32)
    scores[1, : n // 2] = -np.inf  # half excluded
    scores[2, :-5] = -np.inf  # only five left
    scores[3] = np.round(scores[3], 1)  # many ties
    scores[4, 100:130] = 50.0  # the top is one dense run of columns
    ids, top = top_k_rows(scores, 20)
    expected = -np.sort(-scores, axis=1)[:, :20]
    np.testing.assert_array_equal(top, expected)
    valid = ids >= 0
    np.testing.assert_array_equal(valid, np.isfinite(expected))
    np.testing.assert_array_equal(np.take_along_axis(scores, np.maximum(ids, 0), 1)[valid], top[valid])
    assert all(len(set(row[row >= 0])) == (row >= 0).sum() for row in ids)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("metric", ["dot", "angular"])
def test_exact_index_over_a_wide_catalog_matches_brute_force(metric, chunked, monkeypatch):
    """Wide catalogs: whole rows of scores with the chunk-maximum prefilter, or (the widest)
    a chunk of items at a time with a running top-k."""
    import recsys.index.exact as exact

    monkeypatch.setattr(exact, "CHUNKED_MIN_COLUMNS", 16_384 if chunked else 10**9)
    rng = np.random.default_rng(9)
    n_items = 20_000
    items = rng.normal(size=(n_items, 8)).astype(np.float32)
    queries = rng.normal(size=(150, 8)).astype(np.float32)
    exclude = _seen(150, n_items, per_user=40).tolil()
    exclude[7, 5:] = 1.0  # only five items left for query 7
    exclude = exclude.tocsr()
    full = queries @ items.T if metric == "dot" else normalize_rows(queries) @ normalize_rows(items).T
    full[exclude.nonzero()] = -np.inf
    expected = np.argsort(-full, axis=1, kind="stable")[:, :10]
    expected[7, 5:] = -1
    ids, scores = ExactIndex(items, metric).search(queries, 10, exclude=exclude)
    np.testing.assert_array_equal(ids, expected)
    valid = expected >= 0
    np.testing.assert_allclose(
        scores[valid], np.take_along_axis(full, np.maximum(expected, 0), 1)[valid], rtol=1e-5
    )
    assert np.isneginf(scores[~valid]).all()
