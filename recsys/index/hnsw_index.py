"""Graph search with hnswlib (HNSW, inner product), from the ``ann`` extra.

Items are nodes of a layered proximity graph (``M`` links per node, built with
``ef_construction`` candidates); a query walks it greedily keeping its ``ef`` best
candidates. The setting is ef (each query keeps at least the results it asks for).

``dot`` searches the raw factors in hnswlib's ``ip`` space (distance 1 - inner product).
The reduction to a sphere that serves faiss (one more coordinate making every norm equal)
does not serve the graph: most items then sit near the added axis, far from every query,
and on clustered 1M x 64 factors recall@10 stayed below 0.4 at ef 512, against 0.99 at
ef 40 on the raw vectors. ``angular`` indexes unit vectors. Scores are recomputed exactly
from the item factors for the k kept (inner product, or cosine for angular).

The graph depends on the seed and, with several build threads, on their timing: below
PARALLEL_BUILD_ITEMS items it is built on one thread (the same vectors and seed give the
same file), from there on every core (recorded as ``build_threads``). ``index.hnswlib``
sets ``M``, ``ef_construction`` and a fixed ef (:class:`HnswSettings`).
"""

from __future__ import annotations

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
    IndexEntryBase,
    IndexFile,
    LibraryBackend,
    Loaded,
    Made,
    doubling,
    search_excluding,
)
from recsys.index.exact import VectorIndex, check_query, normalize_rows

LINKS = 16
EF_CONSTRUCTION = 100
PARALLEL_BUILD_ITEMS = 200_000
ADD_ITEMS = 50_000
"""Items added to the graph per call while it is built: a progress count between calls."""
MAX_EF = 8192


class HnswIndex(VectorIndex):
    """An hnswlib graph searched at one ef (same interface as the other indices).

    ``ef`` is a property of the loaded graph: it is set before each search, so indices at
    different ef that share one graph must not search at the same time. Queries run on
    ``threads`` threads.
    """

    backend = "hnswlib"

    def __init__(
        self, graph: Any, item_factors: np.ndarray, metric: str, ef: int, threads: int | None = None
    ):
        self.graph, self.metric, self.ef = graph, metric, ef
        self.vectors = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.threads = threads if threads is not None else (os.cpu_count() or 1)
        self._norms: np.ndarray | None = None

    def _rescore(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact scores of ids (q, w) for queries (q, dim): inner product, or cosine."""
        scores = np.einsum("qd,qwd->qw", queries, self.vectors[np.maximum(ids, 0)])
        if self.metric == "angular":
            if self._norms is None:
                self._norms = np.linalg.norm(self.vectors, axis=1).astype(np.float32)
            scores /= self._norms[np.maximum(ids, 0)] * np.linalg.norm(queries, axis=1, keepdims=True)
        return np.where(ids >= 0, scores, -np.inf).astype(np.float32)

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, search_k: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product (cosine for angular) through the graph, best first, never
        an excluded item; ids -1 / scores -inf where the walk found fewer. search_k is
        ignored (ef is the setting)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        check_query(queries, k, self.n_items, self.dim)
        graph_queries = normalize_rows(queries) if self.metric == "angular" else queries
        self.graph.set_ef(self.ef)

        def library_search(rows: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
            try:
                ids, _ = self.graph.knn_query(rows, k=wanted, num_threads=self.threads)
                ids = ids.astype(np.int64)
            except RuntimeError:  # some walk found fewer than wanted: query row by row
                ids = np.full((len(rows), wanted), -1, dtype=np.int64)
                for row, query in enumerate(rows):
                    ids[row] = self._search_one(query, wanted)
            return ids, np.zeros(ids.shape, dtype=np.float32)

        ids, _ = search_excluding(library_search, graph_queries, k, exclude, self.n_items)
        scores = self._rescore(queries, ids)
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)

    def _search_one(self, query: np.ndarray, wanted: int) -> np.ndarray:
        """As many of the wanted results as the walk finds, -1 after them."""
        found = np.full(wanted, -1, dtype=np.int64)
        asked = wanted
        while asked >= 1:
            try:
                ids, _ = self.graph.knn_query(query[None, :], k=asked, num_threads=1)
            except RuntimeError:
                asked //= 2
                continue
            found[:asked] = ids[0]
            break
        return found


# ---------------------------------------------------------------- backend


class HnswSettings(BackendSettings):
    """``index.hnswlib``: the graph's build and its ef."""

    M: int = Field(default=LINKS, ge=2, le=256)
    """Links per node: more, a larger file and better recall at a given ef."""
    ef_construction: int = Field(default=EF_CONSTRUCTION, ge=1, le=MAX_EF)
    """Candidates kept while the graph is built: more, a slower build and a better graph."""
    ef: int | None = Field(default=None, ge=1, le=MAX_EF)
    """Candidates a query keeps; null: tuned, the smallest of k, 2k, 4k, ... that reaches
    ``evaluate.target_recall``."""

    def fixed(self, metric: str) -> int | None:
        return self.ef


class HnswEntry(IndexEntryBase):
    """Served by hnswlib's graph at an ef."""

    backend: Literal["hnswlib"] = "hnswlib"
    ef: int = Field(ge=1)

    @property
    def setting(self) -> tuple[str, int]:
        return ("ef", self.ef)


def default_efs(k: int, n_items: int) -> list[int]:
    """ef values to sweep: k, 2k, 4k, ... up to the catalog (at most MAX_EF)."""
    return doubling(k, min(n_items, MAX_EF))


class HnswBackend(LibraryBackend):
    """hnswlib's HNSW graph by inner product; the setting is ef."""

    name = "hnswlib"
    family = "hnswlib"
    entry = HnswEntry
    settings = HnswSettings
    requires = ("hnswlib",)
    extra = "ann"
    setting = "ef"
    suffix = "hnsw"
    package = "hnswlib"

    def make(self, vectors: np.ndarray, context: BuildContext, settings: HnswSettings) -> Made:
        """The graph of one metric. Items are added ``ADD_ITEMS`` at a time, in id order
        (the graph one call would build), and ``context.progress`` is told (added, items)."""
        import hnswlib

        data = normalize_rows(vectors) if context.metric == "angular" else vectors
        threads = 1 if len(data) < PARALLEL_BUILD_ITEMS else (os.cpu_count() or 1)
        graph = hnswlib.Index(space="ip", dim=data.shape[1])
        graph.init_index(
            max_elements=len(data),
            M=settings.M,
            ef_construction=settings.ef_construction,
            random_seed=context.seed,
        )
        for start in range(0, len(data), ADD_ITEMS):
            stop = min(start + ADD_ITEMS, len(data))
            graph.add_items(data[start:stop], np.arange(start, stop), num_threads=threads)
            if context.progress is not None:
                context.progress(stop, len(data))
        params = {
            "M": settings.M,
            "ef_construction": settings.ef_construction,
            "space": "ip",
            "transform": "unit" if context.metric == "angular" else "none",
            "build_threads": threads,
        }
        return graph, params

    def save(self, index: Any, path: Path) -> None:
        index.save_index(str(path))

    def file_dim(self, metric: str, dim: int) -> int:
        return dim

    def load(self, path: Path, record: IndexFile, item_factors: np.ndarray, metric: str) -> Any:
        """The graph of a file, after the vectors it stores for a sample of items are the
        ones this index of ``metric`` over ``item_factors`` stores (the file has no header:
        the dot and angular graphs of one model have the same size, and only their vectors
        tell them apart)."""
        import hnswlib

        graph = hnswlib.Index(space="ip", dim=record.dim)
        try:
            graph.load_index(str(path), max_elements=record.n_items)
        except (RuntimeError, ValueError) as exc:
            raise AnnIndexError(f"{path}: hnswlib could not load the index: {exc}") from None
        if (count := graph.get_current_count()) != record.n_items:
            raise AnnIndexError(f"{path}: hnswlib file holds {count} items, its entry says {record.n_items}")
        if record.n_items != len(item_factors):
            raise AnnIndexError(
                f"{path}: hnswlib file holds {record.n_items} items, the model has {len(item_factors)}"
            )
        sample = np.unique(
            np.linspace(0, len(item_factors) - 1, num=min(16, len(item_factors)), dtype=np.int64)
        )
        expected = np.asarray(item_factors[sample], dtype=np.float32)
        expected = normalize_rows(expected) if metric == "angular" else expected
        stored = np.asarray(graph.get_items(sample), dtype=np.float32)
        if not np.allclose(stored, expected, rtol=1e-4, atol=1e-6):
            raise AnnIndexError(
                f"{path}: the hnswlib file does not hold this model's {metric} vectors (a file of "
                "another index or model); rebuild the run"
            )
        return graph

    def values(self, record: IndexFile, k: int) -> list[int]:
        return default_efs(k, record.n_items)

    def searcher(self, loaded: Loaded, value: int, threads: int | None) -> HnswIndex:
        return HnswIndex(loaded.index, loaded.item_factors, loaded.metric, value, threads)
