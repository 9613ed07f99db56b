"""Batch top-N recommendations and similar items from any index backend.

Recommendations never contain an item the user has already seen, and similar items
never contain the item itself. Where the approximate index returns fewer than N
results after filtering, the missing places are filled from exact search over the
remaining items: lists are never padded with seen items or sentinel scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp

from recsys.errors import QueryError
from recsys.index.base import SearchIndex
from recsys.index.exact import ExactIndex

DEFAULT_BATCH = 2048


def _top_up(
    ids: np.ndarray,
    scores: np.ndarray,
    queries: np.ndarray,
    exclude: sp.csr_matrix | None,
    exact_index: Callable[[], ExactIndex],
) -> None:
    """Fill the -1 places of rows in place with the best items not yet in the row
    (exact_index is called only when some row is short)."""
    short = np.flatnonzero((ids < 0).any(axis=1))
    if len(short) == 0:
        return
    exact = exact_index()
    k = ids.shape[1]
    n_items = exact.n_items
    taken_rows, taken_cols = [], []
    for position, row in enumerate(short):
        present = ids[row][ids[row] >= 0]
        taken_cols.append(present)
        taken_rows.append(np.full(len(present), position))
    skip = sp.csr_matrix(
        (
            np.ones(sum(map(len, taken_cols)), dtype=np.float32),
            (np.concatenate(taken_rows), np.concatenate(taken_cols)),
        ),
        shape=(len(short), n_items),
    )
    if exclude is not None:
        skip = skip + exclude[short]
    extra_ids, extra_scores = exact.search(queries[short], k, exclude=skip)
    for position, row in enumerate(short):
        keep = ids[row] >= 0
        merged_ids = np.concatenate([ids[row][keep], extra_ids[position]])
        merged_scores = np.concatenate([scores[row][keep], extra_scores[position]])
        order = np.argsort(-merged_scores, kind="stable")[:k]
        ids[row], scores[row] = merged_ids[order], merged_scores[order]


def search_batches(
    index: SearchIndex,
    queries: np.ndarray,
    n: int,
    exclude: sp.csr_matrix | None,
    exact_vectors: np.ndarray,
    search_k: int = -1,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first_row, ids, scores) blocks of the top-n per query.

    exclude: CSR (len(queries), n_items) of items never to return for each query.
    exact_vectors: the indexed vectors, used to fill places the index left empty.
    Rows come back with fewer than n valid ids (-1 after them) only where fewer than n
    items are not excluded.
    """
    if not 1 <= n <= index.n_items:
        raise QueryError(f"n must be between 1 and the {index.n_items} items, found {n}")
    # the exact index for top-ups (a normalised copy of every vector for angular) is built
    # only if some row comes back short, once per call
    built: list[ExactIndex] = [index] if isinstance(index, ExactIndex) else []

    def exact() -> ExactIndex:
        if not built:
            built.append(ExactIndex(exact_vectors, index.metric))
        return built[0]

    total = len(queries)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        block_exclude = exclude[start:stop] if exclude is not None else None
        ids, scores = index.search(queries[start:stop], n, exclude=block_exclude, search_k=search_k)
        _top_up(ids, scores, queries[start:stop], block_exclude, exact)
        if progress is not None:
            progress(stop, total)
        yield start, ids, scores


def recommend_all(
    index: SearchIndex,
    user_factors: np.ndarray,
    user_items: sp.csr_matrix,
    item_factors: np.ndarray,
    n: int,
    search_k: int = -1,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n unseen items for every user.

    user_factors: float32 (n_users, dim); user_items: CSR (n_users, n_items) of seen
    items. Returns ids int64 (n_users, n) and scores float32 (n_users, n), best first;
    -1 / -inf only where a user has fewer than n unseen items.
    """
    return search_all(index, user_factors, n, user_items, item_factors, search_k, batch_size, progress)


def similar_all(
    index: SearchIndex,
    item_factors: np.ndarray,
    n: int,
    search_k: int = -1,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n most similar items for every item, never the item itself.

    Returns ids int64 (n_items, n) and scores float32 (n_items, n), best first.
    """
    n_items = len(item_factors)
    if n >= n_items:
        raise QueryError(f"similar items top_n must be below the {n_items} items, found {n}")
    itself = exclude_items(np.arange(n_items), n_items)
    return search_all(index, item_factors, n, itself, item_factors, search_k, batch_size, progress)


def search_all(
    index: SearchIndex,
    queries: np.ndarray,
    n: int,
    exclude: sp.csr_matrix | None,
    exact_vectors: np.ndarray,
    search_k: int = -1,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search_batches` gathered into ids int64 (q, n) and scores float32 (q, n)."""
    ids = np.empty((len(queries), n), dtype=np.int64)
    scores = np.empty((len(queries), n), dtype=np.float32)
    for start, block_ids, block_scores in search_batches(
        index, queries, n, exclude, exact_vectors, search_k, batch_size, progress
    ):
        ids[start : start + len(block_ids)] = block_ids
        scores[start : start + len(block_ids)] = block_scores
    return ids, scores


def exclude_items(items: np.ndarray, n_items: int) -> sp.csr_matrix:
    """CSR (len(items), n_items) that excludes item ``items[i]`` from query row i: the
    exclusion for similar-item queries, so that an item is never similar to itself."""
    items = np.asarray(items, dtype=np.int64)
    return sp.csr_matrix(
        (np.ones(len(items), dtype=np.float32), (np.arange(len(items)), items)),
        shape=(len(items), n_items),
    )
