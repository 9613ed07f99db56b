"""Exact top-k search: blocked matrix products and ``argpartition``.

Scores are the inner product for ``dot`` and the cosine similarity for ``angular``
(vectors and queries normalised to unit length).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.errors import QueryError
from recsys.index.base import Backend, BuildContext, Built, IndexEntryBase

# Queries per block: a block of scores is block x n_items float32 (one block per thread),
# sized to stay in cache, but never fewer rows than MIN_BLOCK_ROWS (wide catalogs).
DEFAULT_BLOCK_BYTES = 4 * 1024 * 1024
MIN_BLOCK_ROWS = 32
# Catalogs of CHUNKED_MIN_COLUMNS items or more are scored WIDE_BLOCK_ROWS queries x
# CHUNK_COLUMNS items at a time (4 MB) with a running top-k: a whole row of scores no longer
# fits in cache there, and the product of a tall block with a cache-sized chunk runs near the
# machine's rate (benchmarks/speed.py: 3.1x implicit's recommend at 1M items against 1.6x
# for whole rows; whole rows win at 50k-100k items, 2.3-2.6x against 1.0-1.5x).
WIDE_BLOCK_ROWS = 128
CHUNK_COLUMNS = 8192
CHUNKED_MIN_COLUMNS = 250_000


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32). Zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)


# Above this many columns (and for k well below them), top-k first discards every chunk of
# columns whose maximum cannot reach the top k: a max per chunk and one comparison pass are
# much cheaper than a selection over every score.
PREFILTER_MIN_COLUMNS = 16_384


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns per row of a score block, best first.

    scores: float32 (rows, n); entries of -inf are never returned (id -1, score -inf).
    Returns ids int64 (rows, k) and scores float32 (rows, k).
    """
    rows, n = scores.shape
    k_eff = min(k, n)
    if n >= PREFILTER_MIN_COLUMNS and k_eff * 64 <= n:
        ids, top = _top_k_prefiltered(scores, k_eff)
    else:
        ids, top = _top_k_select(scores, k_eff)
    ids[~np.isfinite(top)] = -1
    if k_eff < k:
        ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return ids, top


def _top_k_select(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by a partial selection over every column, then a sort of the k."""
    rows, n = scores.shape
    if k < n:
        part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
    else:
        part = np.broadcast_to(np.arange(n), (rows, n)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    # best first; among equal scores the lower column first (lexsort: last key is primary)
    order = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return ids, np.take_along_axis(part_scores, order, axis=1).astype(np.float32)


def _ragged_places(row: np.ndarray, rows: int, first_place: int = 0) -> tuple[np.ndarray, int]:
    """Column of each entry when entries (sorted by row) are packed left into a padded
    (rows, width) matrix from column first_place on; returns the places and the width."""
    counts = np.bincount(row, minlength=rows)
    place = first_place + np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    return place, first_place + int(counts.max())


def _top_k_prefiltered(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of wide rows: the k-th largest chunk maximum is a lower bound of the k-th
    largest score (k chunks reach it), so only scores at or above it are candidates."""
    rows, n = scores.shape
    chunk = max(16, min(1024, n // (8 * k)))
    whole = n // chunk
    maxes = scores[:, : whole * chunk].reshape(rows, whole, chunk).max(axis=2)
    if whole * chunk < n:
        maxes = np.concatenate([maxes, scores[:, whole * chunk :].max(axis=1, keepdims=True)], axis=1)
    chunks = maxes.shape[1]
    threshold = np.partition(maxes, chunks - k, axis=1)[:, chunks - k]
    row, column = np.divmod(np.flatnonzero(scores >= threshold[:, None]), n)
    place, width = _ragged_places(row, rows)
    candidates = np.zeros((rows, width), dtype=np.int64)
    candidate_scores = np.full(candidates.shape, -np.inf, dtype=np.float32)
    candidates[row, place] = column
    candidate_scores[row, place] = scores[row, column]
    order, top = _top_k_select(candidate_scores, k)
    return np.take_along_axis(candidates, order, axis=1), top


class VectorIndex:
    """An index over an in-memory float32 matrix of item vectors (n_items, dim)."""

    vectors: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


class ExactIndex(VectorIndex):
    """Brute-force search over item vectors with the same interface as the Annoy index."""

    backend = "exact"

    def __init__(
        self,
        vectors: np.ndarray,
        metric: str,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        threads: int | None = None,
    ):
        if metric not in ("dot", "angular"):
            raise ValueError(f"metric must be dot or angular, found {metric!r}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.metric = metric
        self.vectors = normalize_rows(vectors) if metric == "angular" else vectors
        self.block_bytes = block_bytes
        self.threads = threads if threads is not None else (os.cpu_count() or 1)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None = None,
        search_k: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items per query, best first, never an excluded item.

        queries: float32 (q, dim). exclude: optional CSR (q, n_items) of items to skip per
        query. Returns ids int64 (q, k), -1 where fewer than k items remain, and scores
        float32 (q, k), -inf there. search_k is ignored (the search is exhaustive).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        check_query(queries, k, self.n_items, self.dim)
        if self.metric == "angular":
            queries = normalize_rows(queries)
        wide = self.n_items >= CHUNKED_MIN_COLUMNS and k * 64 <= self.n_items
        if wide:
            block = WIDE_BLOCK_ROWS
        else:
            block = max(MIN_BLOCK_ROWS, self.block_bytes // (4 * max(1, self.n_items)))
        ids = np.empty((len(queries), k), dtype=np.int64)
        scores = np.empty((len(queries), k), dtype=np.float32)

        def score_block(start: int) -> None:
            stop = min(start + block, len(queries))
            if wide:
                sub = exclude[start:stop].tocoo() if exclude is not None else None
                ids[start:stop], scores[start:stop] = self._top_k_wide(queries[start:stop], k, sub)
                return
            block_scores = queries[start:stop] @ self.vectors.T
            if exclude is not None:
                sub = exclude[start:stop].tocoo()
                block_scores[sub.row, sub.col] = -np.inf
            ids[start:stop], scores[start:stop] = top_k_rows(block_scores, k)

        starts = range(0, len(queries), block)
        if self.threads > 1 and len(starts) > 1:
            # numpy's products and partitions release the GIL: one block per thread, BLAS
            # single-threaded meanwhile so the two kinds of threads do not compete
            with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(self.threads) as pool:
                list(pool.map(score_block, starts))
        else:
            for start in starts:
                score_block(start)
        return ids, scores

    def _top_k_wide(
        self, queries: np.ndarray, k: int, exclude: sp.coo_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over a wide catalog, a cache-sized chunk of items at a time: each chunk's
        scores are compared with the k-th best score so far, and only those above it are
        merged into the running top-k (few, after the first chunk)."""
        rows = len(queries)
        best_ids = np.full((rows, k), -1, dtype=np.int64)
        best = np.full((rows, k), -np.inf, dtype=np.float32)
        threshold = best[:, k - 1].copy()
        if exclude is not None:
            by_column = np.argsort(exclude.col, kind="stable")
            excluded_rows, excluded_columns = exclude.row[by_column], exclude.col[by_column]
        buffer = np.empty((rows, min(CHUNK_COLUMNS, self.n_items)), dtype=np.float32)
        for first in range(0, self.n_items, CHUNK_COLUMNS):
            last = min(first + CHUNK_COLUMNS, self.n_items)
            # a contiguous (rows, width) view: BLAS writes only into contiguous outputs
            chunk = buffer.reshape(-1)[: rows * (last - first)].reshape(rows, last - first)
            np.matmul(queries, self.vectors[first:last].T, out=chunk)
            if exclude is not None:
                lo, hi = np.searchsorted(excluded_columns, [first, last])
                chunk[excluded_rows[lo:hi], excluded_columns[lo:hi] - first] = -np.inf
            row, column = np.divmod(np.flatnonzero(chunk > threshold[:, None]), last - first)
            if len(row) == 0:
                continue
            place, width = _ragged_places(row, rows, first_place=k)
            merged = np.full((rows, width), -np.inf, dtype=np.float32)
            merged_ids = np.full(merged.shape, -1, dtype=np.int64)
            merged[:, :k], merged_ids[:, :k] = best, best_ids
            merged[row, place] = chunk[row, column]
            merged_ids[row, place] = column + first
            order, best = _top_k_select(merged, k)
            best_ids = np.take_along_axis(merged_ids, order, axis=1)
            threshold = best[:, k - 1].copy()
        best_ids[~np.isfinite(best)] = -1
        return best_ids, best


def check_query(queries: np.ndarray, k: int, n_items: int, dim: int) -> None:
    """Validate a batch of queries against an index (PITFALLS: n=-1 returns everything)."""
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise QueryError(f"queries must have shape (q, {dim}), found {queries.shape}")
    if not 1 <= k <= n_items:
        raise QueryError(f"k must be between 1 and the {n_items} indexed items, found {k}")
    if not np.isfinite(queries).all():
        raise QueryError(f"{int((~np.isfinite(queries)).any(axis=1).sum())} query vector(s) are not finite")


# ---------------------------------------------------------------- backend


class ExactEntry(IndexEntryBase):
    """Served by exact search over the item factors (no file of its own)."""

    backend: Literal["exact"] = "exact"


class ExactBackend(Backend):
    """Exact search: nothing to build or sweep; the baseline every approximate backend is
    measured against."""

    name = "exact"
    family = "exact"
    approximate = False
    entry = ExactEntry

    def build(self, context: BuildContext, k: int, configured: int | None) -> Built | None:
        return None

    def open(
        self,
        entry: IndexEntryBase,
        item_factors: np.ndarray,
        resolve: Callable[[str], Path],
        threads: int | None,
    ) -> ExactIndex:
        return ExactIndex(item_factors, entry.metric, threads=threads)
