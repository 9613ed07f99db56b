"""A backend in one file, as a new one would be written: brute force over a strided
share of the catalog, merged with the full scan (so it is exact at stride 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from recsys.index.base import Backend, BuildContext, Built, IndexEntryBase
from recsys.index.exact import ExactIndex


class StrideEntry(IndexEntryBase):
    backend: Literal["stride"] = "stride"
    stride: int


class StrideIndex(ExactIndex):
    backend = "stride"

    def __init__(self, vectors: np.ndarray, metric: str, stride: int):
        super().__init__(vectors, metric)
        self.stride = stride

    def search(self, queries, k, exclude=None, search_k=-1):
        ids, scores = super().search(queries, k, exclude=exclude)
        if self.stride > 1:  # keep what a strided scan would find, -1 elsewhere
            dropped = (ids % self.stride) != 0
            ids[dropped], scores[dropped] = -1, -np.inf
            order = np.argsort(ids < 0, axis=1, kind="stable")
            ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
        return ids, scores


class StrideBackend(Backend):
    name = "stride"
    family = "stride"
    entry = StrideEntry

    def build(self, context: BuildContext, k: int, configured: int | None) -> Built:
        vectors, metric = context.item_factors, context.metric
        return Built(
            backend=self.name,
            setting="stride",
            values=[configured] if configured else [4, 2, 1],
            index_for=lambda stride: StrideIndex(vectors, metric, stride),
        )

    def open(
        self,
        entry: IndexEntryBase,
        item_factors: np.ndarray,
        resolve: Callable[[str], Path],
        threads: int | None,
    ) -> StrideIndex:
        assert isinstance(entry, StrideEntry)
        return StrideIndex(item_factors, entry.metric, entry.stride)
