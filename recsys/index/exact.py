"""Exact top-k search: blocked matrix products, each tile of scores merged into a running
top-k by a compiled selection in one pass (:mod:`recsys.index.topk_kernel`).

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
# top-k, so the scores stay in cache (4-8 MB per thread); at a large k the chunks hold at
# least CHUNK_COLUMNS_PER_K x k items.
BLOCK_ROWS = 256
CHUNK_COLUMNS = 4096
CHUNKED_MIN_COLUMNS = 32_768
CHUNK_COLUMNS_PER_K = 128

# Inner-product search over a catalog wide enough to be scored in tiles visits the items
# in decreasing norm and stops a query once no item left can enter its top k: an item of
# norm at most n scores at most |q| n with q (Cauchy-Schwarz), computed in float32 within
# a relative NORM_BOUND_MARGIN of that for any dimension up to 4,096 (the rounding of a
# dot product of d terms is at most about d x 6e-8 of |q| |v|).
NORM_BOUND_MARGIN = 1e-3


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
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    rows = scores.shape[0]
    ids = np.full((rows, k), -1, dtype=np.int64)
    top = np.full((rows, k), -np.inf, dtype=np.float32)
    if rows and scores.shape[1]:
        no_exclusions = np.zeros(rows + 1, dtype=np.int64)
        select = _selection(scores.size)
        select(scores, 0, no_exclusions, no_exclusions[:0], no_exclusions[:rows].copy(), ids, top)
    return ids, top


# The compiled selection has a fixed cost per process: about 0.5 s to load numba and the
# kernel from its on-disk cache, about 1.1 s where it is compiled (the first run). A
# process's first SMALL_WORK scores are selected by a stable sort in numpy instead (about
# 0.1 s per million scores, the same results); past them, or for a larger search, the
# compiled kernel serves every search after.
SMALL_WORK = 2_000_000
_small = {"work": 0, "compiled": False}


def _compiled_for(work: int) -> bool:
    """Whether a search of ``work`` scores is selected by the compiled kernel: once the
    process's small searches would pass SMALL_WORK, for this search and every one after."""
    if not _small["compiled"] and _small["work"] + work > SMALL_WORK:
        _small["compiled"] = True
    return _small["compiled"]


def _selection(work: int) -> Callable[..., None]:
    """The selection for a search of ``work`` scores: :func:`_select_sorted` while the
    process's small searches add up to at most SMALL_WORK scores, the compiled kernel
    (:mod:`recsys.index.topk_kernel`, imported then) from the first search past it on."""
    if not _compiled_for(work):
        _small["work"] += work
        return _select_sorted
    from recsys.index.topk_kernel import select_tile

    return select_tile


def warm_selection(work: int) -> None:
    """Load the selection a search of ``work`` scores will use (numba and the compiled
    kernel, on one score) without counting it, so that a timed search measures the search
    and not the process's one-time load: exact search's baseline in ``auto``'s probe."""
    if _compiled_for(work):
        load_compiled_selection()


def load_compiled_selection() -> None:
    """Load numba and the compiled kernels (from numba's cache where it has one) by
    selecting from a one-score tile, without deciding that this process's searches use it
    (:func:`_compiled_for` decides that by their size)."""
    from recsys.index.topk_kernel import select_tile, select_tile_mapped

    pointers = np.zeros(2, dtype=np.int64)
    ids, top = np.full((1, 1), -1, dtype=np.int64), np.full((1, 1), -np.inf, dtype=np.float32)
    tile = np.zeros((1, 1), dtype=np.float32)
    select_tile(tile, 0, pointers, pointers[:0], pointers[:1].copy(), ids, top)
    # and the one that serves inner-product searches in norm order
    select_tile_mapped(tile, 0, pointers[:1], pointers[:0], pointers[:1].copy(), pointers[1:], ids, top)


def _select_sorted(
    block: np.ndarray,
    first: int,
    pointers: np.ndarray,
    columns: np.ndarray,
    cursor: np.ndarray,
    best_ids: np.ndarray,
    best: np.ndarray,
) -> None:
    """:func:`recsys.index.topk_kernel.select_tile` by a stable sort in numpy (same
    arguments, same results): the tile's excluded items to -inf, then the running top-k
    and the tile sorted together, the running top-k first (its columns are lower), so
    that among equal scores the lower column comes first."""
    rows, width = block.shape
    k = best.shape[1]
    if len(columns):
        row = np.repeat(np.arange(rows), np.diff(pointers))
        inside = (columns >= first) & (columns < first + width)
        block[row[inside], columns[inside] - first] = -np.inf
    merged = np.concatenate([best, block], axis=1)
    order = np.argsort(-merged, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(merged, order, axis=1)
    kept = np.take_along_axis(best_ids, np.minimum(order, k - 1), axis=1)
    ids = np.where(order < k, kept, first + order - k)
    empty = ~(top > -np.inf)
    ids[empty], top[empty] = -1, -np.inf
    best_ids[:], best[:] = ids, top


def _sorted_exclusions(exclude: sp.csr_matrix | None, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Row pointers and columns (int64, increasing within each row) of a block's excluded
    items; none where exclude is None."""
    if exclude is None:
        return np.zeros(rows + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    exclude = sp.csr_matrix(exclude)
    if not exclude.has_sorted_indices:
        exclude = exclude.sorted_indices()
    return exclude.indptr.astype(np.int64), exclude.indices.astype(np.int64)


class _NormOrder:
    """A catalog's items in decreasing L2 norm (ties in id order): their ids, vectors
    (a copy, contiguous) and norms, and each item's place in that order."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, norms: np.ndarray):
        self.ids, self.vectors, self.norms = ids, vectors, norms
        self.place = np.empty_like(ids)
        self.place[ids] = np.arange(len(ids))

    @classmethod
    def of(cls, vectors: np.ndarray) -> _NormOrder:
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
        ids = np.argsort(-norms, kind="stable").astype(np.int64)
        return cls(ids, np.ascontiguousarray(vectors[ids]), norms[ids])

    def columns(self, exclude: sp.csr_matrix) -> sp.csr_matrix:
        """Excluded items (CSR rows x items, by id) as places in this order."""
        exclude = sp.csr_matrix(exclude)
        places = self.place[exclude.indices]
        return sp.csr_matrix(
            (np.ones(len(places), dtype=np.int8), places, exclude.indptr), shape=exclude.shape
        )


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
        self._by_norm: _NormOrder | None = None

    def by_norm(self) -> _NormOrder:
        """The items in decreasing norm (made on first use, kept with the index)."""
        if self._by_norm is None:
            self._by_norm = _NormOrder.of(self.vectors)
        return self._by_norm

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
        # whole rows of a narrow catalog; a wide one a chunk of items at a time
        chunk = n_items if n_items < CHUNKED_MIN_COLUMNS else max(CHUNK_COLUMNS, CHUNK_COLUMNS_PER_K * k)
        select_tile = _selection(len(queries) * n_items)
        if self.metric == "dot" and chunk < n_items and select_tile is not _select_sorted:
            return self._search_by_norm(queries, k, exclude, chunk)
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
            pointers, columns = _sorted_exclusions(exclude[start:stop] if exclude is not None else None, rows)
            cursor = pointers[:-1].copy()
            for first in range(0, n_items, chunk):
                last = min(first + chunk, n_items)
                # a contiguous (rows, width) view: BLAS writes only into contiguous outputs
                block = buffers.scores[: rows * (last - first)].reshape(rows, last - first)
                np.matmul(queries[start:stop], self.vectors[first:last].T, out=block)
                # excluded items to -inf and the tile merged into the running top-k, in one
                # pass over the tile while it is in cache
                select_tile(block, first, pointers, columns, cursor, best_ids, best)
            ids[start:stop], scores[start:stop] = best_ids, best

        self._each_block(score_block, len(queries))
        return ids, scores

    def _each_block(self, score_block: Callable[[int], None], n_queries: int) -> None:
        starts = range(0, n_queries, self.block_rows)
        if self.threads > 1 and len(starts) > 1:
            # the products and the compiled selection release the GIL: one block per thread, BLAS
            # single-threaded meanwhile so the two kinds of threads do not compete
            with blas_limit(1), ThreadPoolExecutor(self.threads) as pool:
                list(pool.map(score_block, starts))
        else:
            for start in starts:
                score_block(start)

    def _search_by_norm(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None, chunk: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` by inner product over the items in decreasing norm, tile by tile;
        a query leaves its block once the norm bound of every item left (its norm times
        the next tile's largest item norm, with NORM_BOUND_MARGIN) is below its k-th best,
        and the block stops when none is left. The same results as every tile scored:
        ties go to the lower item id (:func:`recsys.index.topk_kernel.select_tile_mapped`)."""
        from recsys.index.topk_kernel import select_tile_mapped

        order = self.by_norm()
        n_items = self.n_items
        query_norms = np.sqrt(np.einsum("ij,ij->i", queries, queries, dtype=np.float64))
        ids = np.empty((len(queries), k), dtype=np.int64)
        scores = np.empty((len(queries), k), dtype=np.float32)
        buffers = threading.local()

        def score_block(start: int) -> None:
            stop = min(start + self.block_rows, len(queries))
            if not hasattr(buffers, "scores"):
                buffers.scores = np.empty(self.block_rows * chunk, dtype=np.float32)
            pointers, columns = _sorted_exclusions(
                order.columns(exclude[start:stop]) if exclude is not None else None, stop - start
            )
            live = np.arange(start, stop)  # the block's queries still searching
            block_queries = queries[start:stop]
            bound = query_norms[start:stop] * (1.0 + NORM_BOUND_MARGIN)
            cursor, ends = pointers[:-1].copy(), pointers[1:].copy()
            best_ids = np.full((len(live), k), -1, dtype=np.int64)
            best = np.full((len(live), k), -np.inf, dtype=np.float32)
            for first in range(0, n_items, chunk):
                last = min(first + chunk, n_items)
                tile = buffers.scores[: len(live) * (last - first)].reshape(len(live), last - first)
                np.matmul(block_queries, order.vectors[first:last].T, out=tile)
                select_tile_mapped(tile, first, order.ids, columns, cursor, ends, best_ids, best)
                if last == n_items:
                    break
                done = bound * order.norms[last] < best[:, k - 1]
                if done.any():
                    ids[live[done]], scores[live[done]] = best_ids[done], best[done]
                    keep = ~done
                    live, block_queries, bound = live[keep], block_queries[keep], bound[keep]
                    cursor, ends, best_ids, best = cursor[keep], ends[keep], best_ids[keep], best[keep]
                    if not len(live):
                        return
            ids[live], scores[live] = best_ids, best

        self._each_block(score_block, len(queries))
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
