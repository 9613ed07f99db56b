"""Exact top-k search: blocked matrix products, a class prefilter and a small selection.

Scores are the inner product for ``dot`` and the cosine similarity for ``angular``
(vectors and queries normalised to unit length).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from recsys.errors import QueryError
from recsys.index.base import Backend, BuildContext, Built, IndexEntryBase
from recsys.threads import blas_limit

# Queries per block: each worker thread scores BLOCK_ROWS queries against a chunk of items
# at a time, into a score buffer it reuses. Catalogs up to CHUNKED_MIN_COLUMNS items are
# scored whole rows at a time; wider ones CHUNK_COLUMNS items at a time with a running
# top-k, so the scores stay in cache (4-8 MB per thread).
BLOCK_ROWS = 256
CHUNK_COLUMNS = 4096
CHUNKED_MIN_COLUMNS = 32_768
# The class prefilter (see _class_candidates) stacks CLASS_SLICES slices of a row: a class
# is one column of every slice, i.e. the columns equal modulo the slice width.
CLASS_SLICES = 16


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32). Zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns per row of a score block, best first (among equal scores the lower
    column first).

    scores: float32 (rows, n); entries of -inf are never returned (id -1, score -inf).
    Returns ids int64 (rows, k) and scores float32 (rows, k).
    """
    rows, n = scores.shape
    k_eff = min(k, n)
    empty_ids = np.full((rows, k_eff), -1, dtype=np.int64)
    empty = np.full((rows, k_eff), -np.inf, dtype=np.float32)
    ids, top = _merge_chunk(scores, 0, k_eff, empty_ids, empty)
    if k_eff < k:
        ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return ids, top


def _ragged_places(row: np.ndarray, rows: int, first_place: int = 0) -> tuple[np.ndarray, int]:
    """Column of each entry when entries (sorted by row) are packed left into a padded
    (rows, width) matrix from column first_place on; returns the places and the width."""
    counts = np.bincount(row, minlength=rows)
    place = first_place + np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    return place, first_place + int(counts.max())


_LOWEST = np.float32(np.finfo(np.float32).min)


def _merge_chunk(
    scores: np.ndarray,
    first: int,
    k: int,
    best_ids: np.ndarray,
    best: np.ndarray,
    floor: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The top-k of each row over a running top-k (best_ids, best: best first, -1 / -inf
    where empty) and a block of scores of columns first .. first + width - 1. floor: the
    running k-th best score, None for a row's first block (the running top-k is empty).

    The class prefilter: the first CLASS_SLICES x m columns of a row are viewed as
    CLASS_SLICES slices of m columns; class c holds column c of every slice (columns
    equal modulo m, so a run of neighbouring top columns falls into different classes).
    The class maxima are one elementwise maximum over the slices. The k-th largest class
    maximum is at most the block's k-th largest score (k classes each hold a score at
    least that large), and the floor is at most the final k-th score: a class whose
    maximum is below the larger of the two holds no column of the top k, whatever the
    distribution of the scores, ties included. Classes of -inf only (excluded items) are
    skipped. Columns past the slices are always candidates. Only the candidates are
    merged, with a selection over a few columns; rows without candidates keep their
    running top-k. Blocks too narrow for classes
    (fewer than 4k of them) are merged by a selection over every column.

    Returns (ids, scores), each (rows, k); -1 / -inf where fewer than k finite scores.
    """
    rows, width = scores.shape
    m = width // CLASS_SLICES
    if m < 4 * k:
        merged = np.concatenate([best, scores], axis=1)
        merged_ids = np.concatenate(
            [best_ids, np.broadcast_to(np.arange(first, first + width), (rows, width))], axis=1
        )
        return _select_ids(merged, merged_ids, k)
    body = scores[:, : CLASS_SLICES * m].reshape(rows, CLASS_SLICES, m)
    maxima = body.max(axis=1)
    if floor is None:
        # a first block (the running top-k is empty): the k classes of the largest maxima,
        # the same number for every row, hold the top k, unless another class ties with the
        # k-th of them (those rows are redone below with the k-th maximum as the floor)
        top_classes = np.argpartition(maxima, m - k, axis=1)[:, m - k :]
        kth = np.take_along_axis(maxima, top_classes, axis=1).min(axis=1)
        values = body[np.arange(rows)[:, None], :, top_classes].reshape(rows, k * CLASS_SLICES)
        columns = (first + top_classes[:, :, None] + m * np.arange(CLASS_SLICES)).reshape(rows, -1)
        tail = scores[:, CLASS_SLICES * m :]
        if tail.shape[1]:
            values = np.concatenate([values, tail], axis=1)
            columns = np.concatenate(
                [columns, np.broadcast_to(np.arange(first + CLASS_SLICES * m, first + width), tail.shape)],
                axis=1,
            )
        ids, top = _select_ids(values, columns, k)
        tied = np.flatnonzero(np.count_nonzero(maxima >= np.maximum(kth, _LOWEST)[:, None], axis=1) > k)
        if len(tied):
            ids[tied], top[tied] = _merge_classes(
                scores[tied], body[tied], maxima[tied], kth[tied], first, k, best_ids[tied], best[tied]
            )
        return ids, top
    if not (floor > _LOWEST).all():
        floor = np.maximum(floor, np.partition(maxima, m - k, axis=1)[:, m - k])
    return _merge_classes(scores, body, maxima, floor, first, k, best_ids, best)


def _select_ids(values: np.ndarray, columns: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top k of rows of candidate values (the column of each beside it), best first,
    the lower column first among equal scores; ids -1 where the score is -inf.

    A partial selection, then a sort of the k. Where more candidates than k tie with the
    k-th score, the selection may have taken any of them: those rows are sorted whole.
    """
    rows, width = values.shape
    if k < width:
        part = np.argpartition(values, width - k, axis=1)[:, width - k :]
        part_values = np.take_along_axis(values, part, axis=1)
        kth = part_values.min(axis=1)
        tied = np.flatnonzero((np.count_nonzero(values >= kth[:, None], axis=1) > k) & np.isfinite(kth))
        if len(tied):
            part[tied] = np.lexsort((columns[tied], -values[tied]), axis=1)[:, :k]
            part_values[tied] = np.take_along_axis(values[tied], part[tied], axis=1)
    else:
        part = np.broadcast_to(np.arange(width), (rows, width))
        part_values = values
    part_columns = np.take_along_axis(columns, part, axis=1)
    # best first; among equal scores the lower column first (lexsort: last key is primary)
    order = np.lexsort((part_columns, -part_values), axis=1)
    ids = np.take_along_axis(part_columns, order, axis=1).astype(np.int64)
    top = np.take_along_axis(part_values, order, axis=1).astype(np.float32)
    ids[~np.isfinite(top)] = -1
    return ids, top


def _merge_classes(
    scores: np.ndarray,
    body: np.ndarray,
    maxima: np.ndarray,
    floor: np.ndarray,
    first: int,
    k: int,
    best_ids: np.ndarray,
    best: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The running top-k merged with every class whose maximum reaches the floor (a
    different number per row: packed into a padded matrix) and the columns past the
    slices; rows without candidates keep their running top-k."""
    rows, width = scores.shape
    m = maxima.shape[1]
    row, cls = np.nonzero(maxima >= np.maximum(floor, _LOWEST)[:, None])
    tail = width - CLASS_SLICES * m
    hit = np.arange(rows) if tail else np.flatnonzero(np.bincount(row, minlength=rows))
    if len(hit) == 0:
        return best_ids, best
    local = np.zeros(rows, dtype=np.int64)
    local[hit] = np.arange(len(hit))
    place, groups = _ragged_places(local[row], len(hit))
    span = k + groups * CLASS_SLICES
    merged = np.full((len(hit), span + tail), -np.inf, dtype=np.float32)
    merged_ids = np.full(merged.shape, -1, dtype=np.int64)
    merged[:, :k], merged_ids[:, :k] = best[hit], best_ids[hit]
    target = (local[row][:, None], (k + place * CLASS_SLICES)[:, None] + np.arange(CLASS_SLICES))
    merged[target] = body[row, :, cls]
    merged_ids[target] = first + cls[:, None] + m * np.arange(CLASS_SLICES)
    if tail:
        merged[:, span:] = scores[:, CLASS_SLICES * m :]
        merged_ids[:, span:] = first + CLASS_SLICES * m + np.arange(tail)
    ids, top = _select_ids(merged, merged_ids, k)
    if len(hit) == rows:
        return ids, top
    best_ids, best = best_ids.copy(), best.copy()
    best_ids[hit], best[hit] = ids, top
    return best_ids, best


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
        block_rows: int = BLOCK_ROWS,
        threads: int | None = None,
    ):
        if metric not in ("dot", "angular"):
            raise ValueError(f"metric must be dot or angular, found {metric!r}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.metric = metric
        self.vectors = normalize_rows(vectors) if metric == "angular" else vectors
        self.block_rows = block_rows
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
        n_items = self.n_items
        # whole rows of a narrow catalog; a wide one a chunk of items at a time (wide
        # enough for the class prefilter at this k)
        chunk = n_items if n_items < CHUNKED_MIN_COLUMNS else max(CHUNK_COLUMNS, 8 * CLASS_SLICES * k)
        ids = np.empty((len(queries), k), dtype=np.int64)
        scores = np.empty((len(queries), k), dtype=np.float32)
        buffers = threading.local()  # one score buffer per worker thread, reused by its blocks

        def score_block(start: int) -> None:
            stop = min(start + self.block_rows, len(queries))
            rows = stop - start
            if not hasattr(buffers, "scores"):
                buffers.scores = np.empty(self.block_rows * min(chunk, n_items), dtype=np.float32)
            best_ids = np.full((rows, k), -1, dtype=np.int64)
            best = np.full((rows, k), -np.inf, dtype=np.float32)
            if exclude is not None:
                sub = exclude[start:stop].tocoo()
                excluded_rows, excluded_columns = sub.row, sub.col
                if chunk < n_items:
                    by_column = np.argsort(excluded_columns, kind="stable")
                    excluded_rows, excluded_columns = excluded_rows[by_column], excluded_columns[by_column]
            for first in range(0, n_items, chunk):
                last = min(first + chunk, n_items)
                # a contiguous (rows, width) view: BLAS writes only into contiguous outputs
                block = buffers.scores[: rows * (last - first)].reshape(rows, last - first)
                np.matmul(queries[start:stop], self.vectors[first:last].T, out=block)
                if exclude is not None:
                    lo, hi = (
                        np.searchsorted(excluded_columns, [first, last])
                        if chunk < n_items
                        else (0, len(excluded_columns))
                    )
                    block[excluded_rows[lo:hi], excluded_columns[lo:hi] - first] = -np.inf
                floor = best[:, k - 1] if first else None
                best_ids, best = _merge_chunk(block, first, k, best_ids, best, floor)
            ids[start:stop], scores[start:stop] = best_ids, best

        starts = range(0, len(queries), self.block_rows)
        if self.threads > 1 and len(starts) > 1:
            # numpy's products and selections release the GIL: one block per thread, BLAS
            # single-threaded meanwhile so the two kinds of threads do not compete
            with blas_limit(1), ThreadPoolExecutor(self.threads) as pool:
                list(pool.map(score_block, starts))
        else:
            for start in starts:
                score_block(start)
        return ids, scores


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

    def build(self, context: BuildContext, k: int) -> Built | None:
        return None

    def open(
        self,
        entry: IndexEntryBase,
        item_factors: np.ndarray,
        resolve: Callable[[str], Path],
        threads: int | None,
    ) -> ExactIndex:
        return ExactIndex(item_factors, entry.metric, threads=threads)
