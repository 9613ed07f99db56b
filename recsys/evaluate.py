"""How much the approximate index loses against exact search.

recall@k = |approx ∩ exact| / |exact|, with both lists cut at k and exact holding
min(k, available) items; averaged over the sampled queries. Exact search uses the
same metric as the index: inner product for ``dot``, cosine similarity for
``angular``. Queries per second are measured on one core, single-threaded.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.index.exact import ExactIndex
from recsys.recommend import SearchIndex, search_all


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean over rows of |approx[:k] ∩ exact[:k]| / |exact[:k]| (ids -1 are empty places)."""
    if approx_ids.shape[0] != exact_ids.shape[0]:
        raise ValueError("approx and exact must have the same number of rows")
    recalls = []
    for approx_row, exact_row in zip(approx_ids[:, :k], exact_ids[:, :k], strict=True):
        truth = exact_row[exact_row >= 0]
        if len(truth) == 0:
            continue
        recalls.append(len(np.intersect1d(approx_row[approx_row >= 0], truth)) / len(truth))
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
    approx_ids, _ = search_all(index, queries, k, exclude, vectors, search_k)
    approx_seconds = time.perf_counter() - started
    started = time.perf_counter()
    exact_ids, _ = exact.search(queries, k, exclude=exclude)
    exact_seconds = time.perf_counter() - started
    return {
        "metric": index.metric,
        "backend": getattr(index, "backend", "unknown"),
        "k": k,
        "search_k": search_k,
        "queries": int(len(queries)),
        "recall_at_k": round(recall_at_k(approx_ids, exact_ids, k), 6),
        "queries_per_second": round(len(queries) / max(approx_seconds, 1e-9), 1),
        "exact_queries_per_second": round(len(queries) / max(exact_seconds, 1e-9), 1),
    }
