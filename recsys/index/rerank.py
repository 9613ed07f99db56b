"""Candidates from an angular index, re-ranked by the exact inner product.

Annoy's ``dot`` index needs a large search_k to find the top inner products; an
``angular`` index finds the most similar directions cheaply, and for factor models
the top inner products are mostly among them. So: ask the angular index for
``candidates`` items per query (plus the query's excluded items), score those exactly
by inner product and keep the top k. Scores are exact inner products.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.index.annoy_index import AnnoySettings, open_annoy_file
from recsys.index.base import Backend, BuildContext, Built, IndexEntryBase, IndexFile
from recsys.index.exact import VectorIndex, check_query, top_k_rows

GATHER_BYTES = 32 * 1024 * 1024


class RerankIndex(VectorIndex):
    """Inner-product search through an angular index's candidates (same interface)."""

    backend = "annoy-rerank"
    metric = "dot"

    def __init__(self, angular_index, item_factors: np.ndarray, candidates: int):
        if angular_index.metric != "angular":
            raise ValueError("candidates come from an angular index")
        self.angular = angular_index
        self.vectors = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.candidates = candidates

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, search_k: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product among the angular index's candidates, best first
        (ids -1 / scores -inf where fewer candidates than k remain)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        check_query(queries, k, self.n_items, self.dim)
        wanted = min(max(self.candidates, k), self.n_items)
        candidates, _ = self.angular.search(queries, wanted, exclude=exclude, search_k=search_k)
        valid = candidates >= 0
        scores = np.empty(candidates.shape, dtype=np.float32)
        rows = max(1, GATHER_BYTES // (4 * wanted * self.dim))  # bounds the gathered block
        for start in range(0, len(queries), rows):
            block = slice(start, start + rows)
            gathered = self.vectors[np.where(valid[block], candidates[block], 0)]
            scores[block] = np.einsum("qd,qcd->qc", queries[block], gathered)
        scores[~valid] = -np.inf
        order, top = top_k_rows(scores, k)
        ids = np.where(order >= 0, np.take_along_axis(candidates, np.maximum(order, 0), axis=1), -1)
        return ids, top


# ---------------------------------------------------------------- backend


class RerankEntry(IndexEntryBase):
    """Served by re-ranking an angular Annoy index's candidates by exact inner product."""

    backend: Literal["annoy-rerank"] = "annoy-rerank"
    candidates: int = Field(ge=1)
    candidates_from: IndexFile
    """The angular Annoy file whose candidates are re-ranked: the file named ``annoy`` of
    the model's angular index (that entry lists it)."""

    @property
    def setting(self) -> tuple[str, int]:
        return ("candidates", self.candidates)


def default_candidates(k: int, n_items: int) -> list[int]:
    """Candidate counts to sweep for re-ranking: 2k, 4k, 8k, ... up to the catalog."""
    values, value = [], 2 * k
    while value < n_items:
        values.append(value)
        value *= 2
    return [*values, n_items]


class RerankBackend(Backend):
    """Inner products re-ranked from the angular Annoy index of the same model (built by
    the ``annoy`` backend for similar items); the setting is the candidate count."""

    name = "annoy-rerank"
    family = "annoy"
    entry = RerankEntry
    settings = AnnoySettings

    def supports(self, metric: str) -> bool:
        return metric == "dot"

    def build(self, context: BuildContext, k: int) -> Built | None:
        angular = context.built.get(("annoy", "angular"))
        if self.settings_of(context).fixed(context.metric) is not None or angular is None:
            return None  # a configured search_k means Annoy's own search; no angular index here
        index = angular.index_for(-1)
        vectors = context.item_factors
        return Built(
            backend=self.name,
            setting="candidates",
            values=default_candidates(k, len(vectors)),
            index_for=lambda value: RerankIndex(index, vectors, value),
            fields={"candidates_from": angular.files["annoy"]},
        )

    def open(
        self,
        entry: IndexEntryBase,
        item_factors: np.ndarray,
        resolve: Callable[[str], Path],
        threads: int | None,
    ) -> RerankIndex:
        assert isinstance(entry, RerankEntry)
        angular = open_annoy_file(entry.candidates_from, "angular", item_factors, resolve, threads)
        return RerankIndex(angular, item_factors, entry.candidates)
