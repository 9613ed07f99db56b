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
vectors and seed give the same file.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.data.vectors import check_vector_rows
from recsys.errors import AnnIndexError
from recsys.index.base import (
    Backend,
    BuildContext,
    Built,
    IndexEntryBase,
    IndexFile,
    checked_file,
    doubling,
    publish_file,
    search_excluding,
)
from recsys.index.exact import VectorIndex, check_query, normalize_rows

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


def build_faiss_file(
    item_factors: np.ndarray, metric: str, path: Path, seed: int
) -> tuple[dict[str, Any], Any]:
    """Train, fill and publish the inverted file of one metric; returns its
    :class:`IndexFile` fields (path as given) and the faiss index."""
    import faiss

    started = time.perf_counter()
    vectors = check_vector_rows(item_factors, "item vectors", AnnIndexError)
    data = normalize_rows(vectors) if metric == "angular" else sphere_items(vectors)
    nlist = cell_count(len(data))
    quantizer = faiss.IndexFlatIP(data.shape[1])
    index = faiss.IndexIVFFlat(quantizer, data.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.max_points_per_centroid = TRAIN_POINTS_PER_CELL
    index.train(data)
    index.add(data)
    size, sha256 = publish_file(lambda tmp: faiss.write_index(index, str(tmp)), path)
    fields = {
        "path": str(path),
        "library": f"faiss-cpu {version('faiss-cpu')}",
        "n_items": len(data),
        "dim": int(data.shape[1]),
        "seed": seed,
        "params": {"nlist": nlist, "transform": "unit" if metric == "angular" else "sphere"},
        "size_bytes": size,
        "sha256": sha256,
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    return fields, index


def read_faiss_file(path: Path, recorded: IndexFile, metric: str, dim: int) -> Any:
    """The faiss index of a file, after its size, item count and dimension check out."""
    import faiss

    checked_file(path, recorded, AnnIndexError)
    expected_dim = dim if metric == "angular" else dim + 1
    if recorded.dim != expected_dim:
        raise AnnIndexError(
            f"{path}: faiss file holds dimension {recorded.dim}, a {metric} index of {dim} factors needs "
            f"{expected_dim}"
        )
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise AnnIndexError(f"{path}: faiss could not read the index: {reason}") from None
    if index.ntotal != recorded.n_items or index.d != recorded.dim:
        raise AnnIndexError(
            f"{path}: faiss file holds {index.ntotal} items of dimension {index.d}, its entry says "
            f"{recorded.n_items} of {recorded.dim}"
        )
    return index


# ---------------------------------------------------------------- backend


class FaissEntry(IndexEntryBase):
    """Served by faiss's inverted file at an nprobe."""

    backend: Literal["faiss"] = "faiss"
    nprobe: int = Field(ge=1)
    faiss: IndexFile  # type: ignore[assignment]  (required here)

    @property
    def setting(self) -> tuple[str, int]:
        return ("nprobe", self.nprobe)


def default_nprobes(nlist: int) -> list[int]:
    """nprobe values to sweep: 1, 2, 4, ... up to every cell (exhaustive)."""
    return doubling(1, nlist)


class FaissBackend(Backend):
    """faiss ``IndexIVFFlat`` by inner product; the setting is nprobe."""

    name = "faiss"
    family = "faiss"
    entry = FaissEntry
    requires = ("faiss",)
    extra = "ann"

    def build(self, context: BuildContext, k: int, configured: int | None) -> Built | None:
        if self.missing() is not None:
            return None  # the extra is not installed: auto goes on without it
        path = context.path_for("faiss")
        fields, index = build_faiss_file(context.item_factors, context.metric, path, context.seed)
        fields["path"] = context.relative(path)
        dim, metric = context.item_factors.shape[1], context.metric
        nlist = int(fields["params"]["nlist"])
        return Built(
            backend=self.name,
            setting="nprobe",
            values=default_nprobes(nlist),  # index.search_k is Annoy's: nprobe is always swept
            index_for=lambda nprobe: FaissIndex(index, metric, dim, min(nprobe, nlist)),
            fields={"faiss": fields},
        )

    def serve(self, built: Built, value: int) -> dict[str, Any]:
        return {"nprobe": min(value, int(built.fields["faiss"]["params"]["nlist"]))}

    def open(
        self,
        entry: IndexEntryBase,
        item_factors: np.ndarray,
        resolve: Callable[[str], Path],
        threads: int | None,
    ) -> FaissIndex:
        self.check_installed()
        assert isinstance(entry, FaissEntry)
        dim = item_factors.shape[1]
        index = read_faiss_file(resolve(entry.faiss.path), entry.faiss, entry.metric, dim)
        return FaissIndex(index, entry.metric, dim, entry.nprobe, threads)
