"""How much the approximate index loses against exact search.

recall@k = |approx ∩ exact| / |exact|, with both lists cut at k and exact holding
min(k, available) items; averaged over the sampled queries. Exact search uses the
same metric as the index: inner product for ``dot``, cosine similarity for
``angular``. Queries per second are measured on one core, single-threaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.index.base import SearchIndex
from recsys.index.exact import ExactIndex
from recsys.recommend import search_all


def recall_at_k(
    approx_ids: np.ndarray,
    exact_ids: np.ndarray,
    k: int,
    approx_scores: np.ndarray | None = None,
    exact_scores: np.ndarray | None = None,
    tolerance: float = 1e-5,
) -> float:
    """Mean over rows of |approx[:k] ∩ exact[:k]| / |exact[:k]| (ids -1 are empty places).

    With scores, ties count: an approximate result whose exact score is within
    ``tolerance`` (relative) of the k-th exact score is as good as the exact one it
    displaced. Without this, items with identical vectors (rare items of one user
    often get them) make recall depend on how ties were broken, not on the search.
    """
    if approx_ids.shape[0] != exact_ids.shape[0]:
        raise ValueError("approx and exact must have the same number of rows")
    recalls = []
    for row, (approx_row, exact_row) in enumerate(zip(approx_ids[:, :k], exact_ids[:, :k], strict=True)):
        truth = exact_row[exact_row >= 0]
        if len(truth) == 0:
            continue
        found = approx_row[approx_row >= 0]
        hits = len(np.intersect1d(found, truth))
        if approx_scores is not None and exact_scores is not None and hits < len(truth):
            kth = exact_scores[row, len(truth) - 1]
            others = ~np.isin(found, truth)
            margin = tolerance * max(abs(float(kth)), 1.0)
            hits += int((approx_scores[row, : len(found)][others] >= kth - margin).sum())
        recalls.append(min(hits, len(truth)) / len(truth))
    return float(np.mean(recalls)) if recalls else float("nan")


def sample_rows(n_rows: int, size: int, seed: int) -> np.ndarray:
    """A sorted sample of row positions without replacement (all rows if size >= n_rows)."""
    if size >= n_rows:
        return np.arange(n_rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=size, replace=False)).astype(np.int64)


def ann_recall(
    index: SearchIndex,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    search_k: int = -1,
) -> dict[str, Any]:
    """Recall@k of the index's served lists (after exclusion and top-up) against exact
    search with the same metric, and the speed of both.

    queries: float32 (q, dim); exclude: CSR (q, n_items) of items to skip per query.
    """
    exact = ExactIndex(vectors, index.metric)
    started = time.perf_counter()
    approx_ids, approx_scores = search_all(index, queries, k, exclude, vectors, search_k)
    approx_seconds = time.perf_counter() - started
    started = time.perf_counter()
    exact_ids, exact_scores = exact.search(queries, k, exclude=exclude)
    exact_seconds = time.perf_counter() - started
    return {
        "metric": index.metric,
        "backend": getattr(index, "backend", "unknown"),
        "k": k,
        "search_k": search_k,
        "queries": int(len(queries)),
        "recall_at_k": round(recall_at_k(approx_ids, exact_ids, k, approx_scores, exact_scores), 6),
        "queries_per_second": round(len(queries) / max(approx_seconds, 1e-9), 1),
        "exact_queries_per_second": round(len(queries) / max(exact_seconds, 1e-9), 1),
    }


RANKING_NAMES = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage", "popularity")
"""The ranking metrics measured at each ``evaluate.k`` (:func:`recsys.evaluate.ranking_metrics`)."""


@dataclass(frozen=True, order=True)
class RankingMetric:
    """A ranking metric at a cut-off (``ndcg@10``): the name and k, written ``name@k``
    where a figure is published (manifest keys, report headers, ``recsys runs``)."""

    name: str
    k: int

    @classmethod
    def parse(cls, text: str) -> RankingMetric:
        """``ndcg@10`` -> RankingMetric("ndcg", 10); a ValueError for anything else."""
        name, at, k = text.partition("@")
        if not at or name not in RANKING_NAMES or not k.isdigit() or int(k) < 1:
            raise ValueError(f"not a ranking metric: {text!r} (expected one of {', '.join(RANKING_NAMES)}@k)")
        return cls(name, int(k))

    def __str__(self) -> str:
        return f"{self.name}@{self.k}"


def ranking_metrics(
    recommended: np.ndarray,
    holdout: sp.csr_matrix,
    ks: list[int],
    item_popularity: np.ndarray,
) -> dict[str, float]:
    """Ranking quality of top-N lists against held-out items, averaged over the users
    that have any held-out item.

    recommended: int64 (n_users, N) internal item ids, best first, -1 for empty places.
    holdout: CSR (n_users, n_items), non-zero = held-out item of the user.
    item_popularity: float (n_items,), training interactions per item.

    At each k (binary relevance, H = the user's held-out items, hits@k = |top-k ∩ H|):
    precision@k = hits@k / k; recall@k = hits@k / |H|; hit_rate@k = 1 if hits@k > 0;
    ndcg@k = sum_{i<=k, rel_i} 1/log2(i+1) / sum_{i<=min(k,|H|)} 1/log2(i+1);
    map@k = sum_{i<=k, rel_i} precision@i / min(k, |H|);
    coverage@k = distinct items in all users' top-k / n_items (over evaluated users);
    popularity@k = mean item_popularity of the recommended items.
    """
    users = np.flatnonzero(np.diff(holdout.indptr) > 0)
    if len(users) == 0:
        return {}
    top = recommended[users]
    n_items = holdout.shape[1]
    valid = top >= 0
    relevant = np.zeros(top.shape, dtype=bool)
    rows = np.repeat(np.arange(len(users)), top.shape[1])[valid.ravel()]
    hits = np.asarray(holdout[users[rows], top[valid]]).ravel() > 0
    relevant[valid] = hits
    n_relevant = np.diff(holdout.indptr)[users].astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    metrics: dict[str, float] = {}
    for k in ks:
        rel = relevant[:, :k]
        hits_k = rel.sum(axis=1)
        ideal = np.cumsum(discounts[:k])[np.minimum(n_relevant, k).astype(int) - 1]
        precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
        recommended_k = top[:, :k][valid[:, :k]]
        metrics[f"precision@{k}"] = float(np.mean(hits_k / k))
        metrics[f"recall@{k}"] = float(np.mean(hits_k / n_relevant))
        metrics[f"ndcg@{k}"] = float(np.mean((rel * discounts[:k]).sum(axis=1) / ideal))
        metrics[f"map@{k}"] = float(np.mean((precision_at_i * rel).sum(axis=1) / np.minimum(n_relevant, k)))
        metrics[f"hit_rate@{k}"] = float(np.mean(hits_k > 0))
        metrics[f"coverage@{k}"] = float(len(np.unique(recommended_k)) / n_items)
        popularity = item_popularity[recommended_k].mean() if len(recommended_k) else 0.0
        metrics[f"popularity@{k}"] = float(popularity)
    metrics["users"] = int(len(users))
    return {key: round(value, 6) if isinstance(value, float) else value for key, value in metrics.items()}


def sweep_search_k(
    index: SearchIndex,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    search_ks: list[int],
    target_recall: float,
    stop_when_slower: bool,
) -> dict[str, Any]:
    """Recall@k against exact search and queries/s for increasing search_k, until the
    target recall is reached (or, with ``stop_when_slower``, until the index is slower
    than exact search, where no search_k can be worth it).

    Returns the curve, exact search's speed, and ``search_k`` (the smallest reaching the
    target) or None.
    """
    return sweep_setting(
        lambda _: index,
        "search_k",
        vectors,
        queries,
        k,
        exclude,
        search_ks,
        target_recall,
        stop_when_slower,
        metric=index.metric,
    )


def sweep_setting(
    index_for: Callable[[int], SearchIndex],
    setting: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    values: list[int],
    target_recall: float,
    stop_when_slower: bool,
    metric: str,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """:func:`sweep_search_k` over any setting: ``index_for(value)`` gives the index to
    query (asked with ``search_k=value`` when the setting is search_k, else -1).
    progress: called with (values tried, values) after each value."""
    exact = ExactIndex(vectors, metric)
    started = time.perf_counter()
    exact_ids, exact_scores = exact.search(queries, k, exclude=exclude)
    exact_qps = len(queries) / max(time.perf_counter() - started, 1e-9)
    curve, chosen = [], None
    for value in values:
        index = index_for(value)
        search_k = value if setting == "search_k" else -1
        started = time.perf_counter()
        ids, scores = search_all(index, queries, k, exclude, vectors, search_k)
        qps = len(queries) / max(time.perf_counter() - started, 1e-9)
        recall = recall_at_k(ids, exact_ids, k, scores, exact_scores)
        curve.append({setting: value, "recall_at_k": round(recall, 6), "queries_per_second": round(qps, 1)})
        if progress is not None:
            progress(len(curve), len(values))
        if recall >= target_recall:
            chosen = value
            break
        if stop_when_slower and qps < exact_qps:
            break
    return {
        "setting": setting,
        "k": k,
        "queries": int(len(queries)),
        "target_recall": target_recall,
        setting: chosen,
        "exact_queries_per_second": round(exact_qps, 1),
        "curve": curve,
    }
