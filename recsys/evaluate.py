"""How much the approximate index loses against exact search.

recall@k = |approx ∩ exact| / |exact|, with both lists cut at k and exact holding
min(k, available) items; averaged over the sampled queries. Exact search uses the
same metric as the index: inner product for ``dot``, cosine similarity for
``angular``. Queries per second are measured on one core, single-threaded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.index.base import SearchIndex
from recsys.index.exact import ExactIndex, warm_selection
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


PER_USER_NAMES = ("precision", "recall", "ndcg", "map", "hit_rate")
"""The ranking metrics that are means over users: summed per user, divided by the users."""


@dataclass(frozen=True, eq=False)
class RankingSums:
    """What the ranking metrics of a set of users are made of, as sums and counts that
    add up exactly across disjoint sets of users (shards scored apart): the figures are
    divided out once, at the end (:meth:`metrics`), never averaged from averages.

    At each k of ``ks`` (column j): ``per_user[m, j]`` the sum over the users of metric
    ``PER_USER_NAMES[m]``; ``places[j]`` the recommended places (valid ids) in their
    top-k and ``popularity[j]`` the sum of those items' popularity; ``items[j]`` one bit
    per item (``np.packbits`` of n_items flags), set where the item is in some top-k.
    ``users``: the users with any held-out item. A few KB for thousands of items: it
    travels from a worker to the flow."""

    ks: tuple[int, ...]
    n_items: int
    users: int
    per_user: np.ndarray
    places: np.ndarray
    popularity: np.ndarray
    items: np.ndarray

    @classmethod
    def empty(cls, ks: list[int] | tuple[int, ...], n_items: int) -> RankingSums:
        """No users: the sums of a shard where no user has a held-out item."""
        ks = tuple(int(k) for k in ks)
        return cls(
            ks=ks,
            n_items=int(n_items),
            users=0,
            per_user=np.zeros((len(PER_USER_NAMES), len(ks)), dtype=np.float64),
            places=np.zeros(len(ks), dtype=np.int64),
            popularity=np.zeros(len(ks), dtype=np.float64),
            items=np.zeros((len(ks), (int(n_items) + 7) // 8), dtype=np.uint8),
        )

    def __add__(self, other: RankingSums) -> RankingSums:
        """The sums of both sets of users (disjoint): sums and counts added, item sets
        united."""
        if not isinstance(other, RankingSums):
            return NotImplemented
        if (self.ks, self.n_items) != (other.ks, other.n_items):
            raise ValueError(
                f"cannot add ranking sums at k={list(other.ks)} over {other.n_items} items "
                f"to sums at k={list(self.ks)} over {self.n_items} items"
            )
        return RankingSums(
            ks=self.ks,
            n_items=self.n_items,
            users=self.users + other.users,
            per_user=self.per_user + other.per_user,
            places=self.places + other.places,
            popularity=self.popularity + other.popularity,
            items=self.items | other.items,
        )

    def distinct_items(self) -> np.ndarray:
        """Distinct items recommended in the users' top-k, one count per k."""
        flags = np.unpackbits(self.items, axis=1, count=self.n_items)
        return np.count_nonzero(flags, axis=1)

    def metrics(self, digits: int | None = 6) -> dict[str, float]:
        """The figures of :func:`ranking_metrics` (``name@k`` and ``users``; empty where
        no user has a held-out item), rounded to ``digits`` (None: not rounded)."""
        if self.users == 0:
            return {}
        distinct = self.distinct_items()
        metrics: dict[str, float] = {}
        for j, k in enumerate(self.ks):
            for m, name in enumerate(PER_USER_NAMES):
                metrics[f"{name}@{k}"] = float(self.per_user[m, j] / self.users)
            metrics[f"coverage@{k}"] = float(int(distinct[j]) / self.n_items)
            places = int(self.places[j])
            metrics[f"popularity@{k}"] = float(self.popularity[j] / places) if places else 0.0
        if digits is not None:
            metrics = {key: round(value, digits) for key, value in metrics.items()}
        metrics["users"] = int(self.users)
        return metrics


def combine(sums: Iterable[RankingSums]) -> RankingSums:
    """The sums of all the parts (disjoint sets of users); at least one part."""
    parts = list(sums)
    if not parts:
        raise ValueError("no ranking sums to combine")
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def ranking_sums(
    recommended: np.ndarray,
    holdout: sp.csr_matrix,
    ks: list[int],
    item_popularity: np.ndarray,
) -> RankingSums:
    """The sums of :func:`ranking_metrics` over the users that have any held-out item:
    the same arguments, added across shards of users with ``+`` (:func:`combine`)."""
    n_items = holdout.shape[1]
    users = np.flatnonzero(np.diff(holdout.indptr) > 0)
    if len(users) == 0:
        return RankingSums.empty(ks, n_items)
    top = recommended[users]
    valid = top >= 0
    relevant = np.zeros(top.shape, dtype=bool)
    rows = np.repeat(np.arange(len(users)), top.shape[1])[valid.ravel()]
    if len(rows):  # (scipy answers an empty fancy index with a sparse matrix)
        relevant[valid] = np.asarray(holdout[users[rows], top[valid]]).ravel() > 0
    n_relevant = np.diff(holdout.indptr)[users].astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    sums = RankingSums.empty(ks, n_items)
    per_user, places, popularity, items = sums.per_user, sums.places, sums.popularity, sums.items
    for j, k in enumerate(sums.ks):
        rel = relevant[:, :k]
        hits_k = rel.sum(axis=1)
        ideal = np.cumsum(discounts[:k])[np.minimum(n_relevant, k).astype(int) - 1]
        precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
        recommended_k = top[:, :k][valid[:, :k]]
        per_user[0, j] = np.sum(hits_k / k)
        per_user[1, j] = np.sum(hits_k / n_relevant)
        per_user[2, j] = np.sum((rel * discounts[:k]).sum(axis=1) / ideal)
        per_user[3, j] = np.sum((precision_at_i * rel).sum(axis=1) / np.minimum(n_relevant, k))
        per_user[4, j] = np.count_nonzero(hits_k > 0)
        places[j] = len(recommended_k)
        popularity[j] = np.sum(item_popularity[recommended_k], dtype=np.float64)
        flags = np.zeros(n_items, dtype=bool)
        flags[recommended_k] = True
        items[j] = np.packbits(flags)
    return dataclasses.replace(sums, users=int(len(users)))


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

    Computed as :func:`ranking_sums` divided out (:meth:`RankingSums.metrics`): the
    figures of users scored in shards are the same, up to the order of additions.
    """
    return ranking_sums(recommended, holdout, ks, item_popularity).metrics()


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


def exact_baseline(
    vectors: np.ndarray, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None, metric: str
) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact search's lists of the queries (ids, scores) and its queries/s."""
    exact = ExactIndex(vectors, metric)
    warm_selection(len(queries) * len(vectors))  # the search timed, not the process's load
    started = time.perf_counter()
    exact_ids, exact_scores = exact.search(queries, k, exclude=exclude)
    return exact_ids, exact_scores, len(queries) / max(time.perf_counter() - started, 1e-9)


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
    baseline: tuple[np.ndarray, np.ndarray, float] | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """:func:`sweep_search_k` over any setting: ``index_for(value)`` gives the index to
    query (asked with ``search_k=value`` when the setting is search_k, else -1).
    progress: called with (values tried, values) after each value. baseline: exact
    search's (ids, scores, queries/s) on these queries, where already measured (else
    measured here). deadline: a ``time.perf_counter()`` after which no further value is
    tried."""
    if baseline is None:
        baseline = exact_baseline(vectors, queries, k, exclude, metric)
    exact_ids, exact_scores, exact_qps = baseline
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
        if deadline is not None and time.perf_counter() >= deadline:
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
