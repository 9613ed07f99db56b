"""Inverted-file search with faiss (``IndexIVFFlat``, inner product), from the ``ann`` extra.

Items are split into ``nlist`` cells by k-means; a query scores every cell centre and
scans the items of its ``nprobe`` best cells exactly. The setting is nprobe.

``dot`` uses the standard reduction of inner-product search to search on a sphere: each
item x gets one more coordinate sqrt(M^2 - |x|^2) (M the largest item norm), each query
a 0, so that every item has norm M and a query's inner product with it is unchanged:
k-means then groups items by direction, and the cells holding the largest inner products
are those whose centres score best. (Without it, cells formed around raw vectors with
log-normal norms needed 128 of 4,096 cells for recall@10 0.95 on clustered factors, with
it 2 of 1,024.) ``angular`` indexes unit vectors. Scores are the exact inner product
(cosine for angular) that faiss computes over the stored vectors.

k-means is seeded (``cp.seed``) and trained on at most 64 items per cell, so the same
vectors and seed give the same file. ``index.faiss`` sets the cells, the training sample
and a fixed nprobe (:class:`FaissSettings`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.errors import AnnIndexError
from recsys.index.base import (
    BackendSettings,
    BuildContext,
    Built,
    IndexEntryBase,
    IndexFile,
    LibraryBackend,
    Loaded,
    Made,
    doubling,
    search_excluding,
)
from recsys.index.exact import VectorIndex, check_query, normalize_rows
from recsys.threads import blas_limit

TRAIN_POINTS_PER_CELL = 64
MIN_POINTS_PER_CELL = 39  # faiss warns below this many training points per cell


def cell_count(n_items: int) -> int:
    """Cells of the inverted file: the power of two nearest sqrt(n_items), with at least 39
    items per cell."""
    return max(1, min(2 ** round(math.log2(math.sqrt(n_items))), n_items // MIN_POINTS_PER_CELL))


def sphere_items(vectors: np.ndarray) -> np.ndarray:
    """Items (n, dim) -> (n, dim + 1) of equal norm M: x, sqrt(M^2 - |x|^2)."""
    norms = np.linalg.norm(vectors, axis=1)
    extra = np.sqrt(np.maximum(norms.max() ** 2 - norms**2, 0.0))
    return np.ascontiguousarray(np.hstack([vectors, extra[:, None]]), dtype=np.float32)


def sphere_queries(queries: np.ndarray) -> np.ndarray:
    """Queries (q, dim) -> (q, dim + 1) with a 0 appended: inner products unchanged."""
    return np.ascontiguousarray(np.hstack([queries, np.zeros((len(queries), 1), np.float32)]))


class FaissIndex(VectorIndex):
    """A faiss inverted file searched at one nprobe (same interface as the other indices).

    Several of these may share one loaded faiss index at different nprobe (the value is
    passed per search). Queries run on ``threads`` OpenMP threads.
    """

    backend = "faiss"

    def __init__(self, index: Any, metric: str, dim: int, nprobe: int, threads: int | None = None):
        self.index, self.metric, self._dim, self.nprobe = index, metric, dim, nprobe
        self.threads = threads if threads is not None else (os.cpu_count() or 1)

    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return self._dim

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, search_k: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product (cosine for angular) among the items of the nprobe best
        cells, best first, never an excluded item; ids -1 / scores -inf where those cells
        hold fewer. search_k is ignored (nprobe is the setting)."""
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        check_query(queries, k, self.n_items, self.dim)
        queries = normalize_rows(queries) if self.metric == "angular" else sphere_queries(queries)
        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        faiss.omp_set_num_threads(self.threads)

        def library_search(rows: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
            scores, ids = self.index.search(rows, wanted, params=params)
            return ids.astype(np.int64, copy=False), scores

        return search_excluding(library_search, queries, k, exclude, self.n_items)


# ---------------------------------------------------------------- backend


class FaissSettings(BackendSettings):
    """``index.faiss``: the inverted file's build and its nprobe."""

    nlist: int | None = Field(default=None, ge=1)
    """Cells of the inverted file (at most one per item); null: the power of two nearest
    sqrt(items), with at least 39 items per cell."""
    train_points_per_cell: int = Field(default=TRAIN_POINTS_PER_CELL, ge=MIN_POINTS_PER_CELL)
    """Items k-means trains on per cell (a sample of the catalog: faster builds)."""
    nprobe: int | None = Field(default=None, ge=1)
    """Cells each query scans; null: tuned, the smallest of 1, 2, 4, ... that reaches
    ``evaluate.target_recall``."""

    def fixed(self, metric: str) -> int | None:
        return self.nprobe


class FaissEntry(IndexEntryBase):
    """Served by faiss's inverted file at an nprobe."""

    backend: Literal["faiss"] = "faiss"
    nprobe: int = Field(ge=1)

    @property
    def setting(self) -> tuple[str, int]:
        return ("nprobe", self.nprobe)


def default_nprobes(nlist: int) -> list[int]:
    """nprobe values to sweep: 1, 2, 4, ... up to every cell (exhaustive)."""
    return doubling(1, nlist)


class FaissBackend(LibraryBackend):
    """faiss ``IndexIVFFlat`` by inner product; the setting is nprobe."""

    name = "faiss"
    family = "faiss"
    entry = FaissEntry
    settings = FaissSettings
    requires = ("faiss",)
    extra = "ann"
    setting = "nprobe"
    suffix = "faiss"
    package = "faiss-cpu"

    def make(self, vectors: np.ndarray, context: BuildContext, settings: FaissSettings) -> Made:
        """Train and fill the inverted file of one metric (seeded k-means), on every core:
        faiss's OpenMP threads (a search may have left them at its own count) and BLAS."""
        import faiss

        data = normalize_rows(vectors) if context.metric == "angular" else sphere_items(vectors)
        nlist = min(settings.nlist, len(data)) if settings.nlist is not None else cell_count(len(data))
        quantizer = faiss.IndexFlatIP(data.shape[1])
        index = faiss.IndexIVFFlat(quantizer, data.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = context.seed
        index.cp.max_points_per_centroid = settings.train_points_per_cell
        threads = os.cpu_count() or 1
        faiss.omp_set_num_threads(threads)
        with blas_limit(threads):
            index.train(data)
            index.add(data)
        params = {"nlist": nlist, "transform": "unit" if context.metric == "angular" else "sphere"}
        return index, {**params, "build_threads": threads}

    def save(self, index: Any, path: Path) -> None:
        import faiss

        faiss.write_index(index, str(path))

    def file_dim(self, metric: str, dim: int) -> int:
        return dim if metric == "angular" else dim + 1

    def load(self, path: Path, record: IndexFile, item_factors: np.ndarray, metric: str) -> Any:
        import faiss

        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
            raise AnnIndexError(f"{path}: faiss could not read the index: {reason}") from None
        if index.ntotal != record.n_items or index.d != record.dim:
            raise AnnIndexError(
                f"{path}: faiss file holds {index.ntotal} items of dimension {index.d}, its entry says "
                f"{record.n_items} of {record.dim}"
            )
        return index

    def values(self, record: IndexFile, k: int) -> list[int]:
        return default_nprobes(int(record.params["nlist"]))

    def searcher(self, loaded: Loaded, value: int, threads: int | None) -> FaissIndex:
        nlist = int(loaded.record.params["nlist"])
        return FaissIndex(
            loaded.index, loaded.metric, loaded.item_factors.shape[1], min(value, nlist), threads
        )

    def serve(self, built: Built, value: int) -> dict[str, Any]:
        return {"nprobe": min(value, int(built.files[self.name].params["nlist"]))}
